/* weft_poll.node: readiness of a file descriptor on Node's own event loop.
 *
 * watch(fd, callback) starts a libuv poll handle (level-triggered epoll) on
 * the main loop and calls callback(status) whenever fd is readable; the
 * callback reads with the shim's non-blocking batch calls. Nothing waits on
 * libuv's threadpool and no thread hop sits between a packet and its answer.
 * unwatch(handle) stops and frees it. Errors are thrown as JS errors.
 */
#include <stdlib.h>
#include <node_api.h>
#include <uv.h>

typedef struct {
	uv_poll_t poll;
	napi_env env;
	napi_ref callback;
	napi_async_context ctx;
	int stopped;
} watch_t;

#define CHECK(call)                                                       \
	do {                                                                  \
		if ((call) != napi_ok) {                                          \
			napi_throw_error(env, "WEFT_POLL", #call " failed");          \
			return NULL;                                                  \
		}                                                                 \
	} while (0)

static void on_readable(uv_poll_t *h, int status, int events)
{
	watch_t *w = h->data;
	napi_env env = w->env;
	napi_handle_scope scope;
	napi_value cb, recv, arg;

	(void)events;
	if (w->stopped)
		return;
	napi_open_handle_scope(env, &scope);
	napi_get_reference_value(env, w->callback, &cb);
	napi_get_global(env, &recv); /* make_callback wants an object as receiver */
	napi_create_int32(env, status, &arg);
	/* make_callback: runs queued microtasks afterwards, as any I/O callback. */
	if (napi_make_callback(env, w->ctx, recv, cb, 1, &arg, NULL) == napi_pending_exception) {
		napi_value e;

		/* The callback threw: report it as an uncaught exception, as Node does for its own I/O callbacks. */
		napi_get_and_clear_last_exception(env, &e);
		napi_fatal_exception(env, e);
	}
	napi_close_handle_scope(env, scope);
}

static napi_value watch(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2], name, ext;
	int32_t fd;
	uv_loop_t *loop;
	watch_t *w;

	CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 2) {
		napi_throw_type_error(env, NULL, "watch(fd, callback)");
		return NULL;
	}
	CHECK(napi_get_value_int32(env, argv[0], &fd));
	CHECK(napi_get_uv_event_loop(env, &loop));
	w = calloc(1, sizeof(*w));
	if (!w) {
		napi_throw_error(env, "WEFT_POLL", "out of memory");
		return NULL;
	}
	w->env = env;
	if (uv_poll_init(loop, &w->poll, fd) != 0) {
		free(w);
		napi_throw_error(env, "WEFT_POLL", "uv_poll_init failed (not a pollable descriptor?)");
		return NULL;
	}
	w->poll.data = w; /* after init, which resets the handle */
	CHECK(napi_create_reference(env, argv[1], 1, &w->callback));
	CHECK(napi_create_string_utf8(env, "weft-poll", NAPI_AUTO_LENGTH, &name));
	CHECK(napi_async_init(env, NULL, name, &w->ctx));
	if (uv_poll_start(&w->poll, UV_READABLE, on_readable) != 0) {
		napi_throw_error(env, "WEFT_POLL", "uv_poll_start failed");
		return NULL;
	}
	CHECK(napi_create_external(env, w, NULL, NULL, &ext));
	return ext;
}

static void on_closed(uv_handle_t *h)
{
	free(h->data);
}

static napi_value unwatch(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	watch_t *w;

	CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&w) != napi_ok || !w || w->stopped) return NULL;
	w->stopped = 1;
	uv_poll_stop(&w->poll);
	napi_delete_reference(env, w->callback);
	napi_async_destroy(env, w->ctx);
	uv_close((uv_handle_t *)&w->poll, on_closed);
	return NULL;
}

NAPI_MODULE_INIT()
{
	napi_value f;

	napi_create_function(env, "watch", NAPI_AUTO_LENGTH, watch, NULL, &f);
	napi_set_named_property(env, exports, "watch", f);
	napi_create_function(env, "unwatch", NAPI_AUTO_LENGTH, unwatch, NULL, &f);
	napi_set_named_property(env, exports, "unwatch", f);
	return exports;
}
