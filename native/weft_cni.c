/* weft's CNI plugin binary, installed twice: as `weft` (the main plugin)
 * and as `weft-ipam` (IPAM only, for bridge, ptp and other main plugins).
 *
 * The runtime execs a plugin for every pod start and stop, so its start-up
 * time is part of every pod's. This client therefore does no work itself: it
 * forwards its name, the CNI_* environment and stdin to the node's weft agent
 * over a unix socket, prints the agent's answer and exits with its code
 * (a statically linked C program starts in about a millisecond; a Node
 * client took ~40 ms just to start).
 *
 * Request:  cni {"role":"weft"|"weft-ipam","env":{"CNI_COMMAND":...},"stdin":"..."}\n
 * Reply:    cni-reply <exit code> <byte count>\n<that many bytes of stdout>
 *
 * VERSION is answered here, so it works without an agent. When the agent
 * cannot be reached the plugin prints the spec's error JSON with code 11
 * ("try again later"; 50 "not available" for STATUS).
 *
 * The socket: "controlSocket" in the config (any level, e.g. under "ipam"),
 * else $WEFT_CONTROL_SOCKET, else /run/weft/agent.sock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/weft/agent.sock"
#define MAX_STDIN (4u << 20)
#define TIMEOUT_SEC 120

extern char **environ;

struct buf {
	char *p;
	size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			fputs("weft: out of memory\n", stderr);
			exit(1);
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* Appends s as a JSON string (quotes included). */
static void put_json(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	put(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			put(b, e, 2);
		} else if (c < 0x20) {
			char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			put(b, e, 6);
		} else {
			put(b, (const char *)&s[i], 1);
		}
	}
	put(b, "\"", 1);
}

/* The string value of the first `"key": "value"` in a JSON text (no escapes
 * in the value), copied to out. Only a key is followed by ':', so a string
 * value equal to the key does not match. Returns 0 when found. */
static int find_string(const char *json, const char *key, char *out, size_t outlen)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\"", key);
	for (const char *p = strstr(json, pat); p; p = strstr(p + 1, pat)) {
		const char *q = p + strlen(pat);
		while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
			q++;
		if (*q++ != ':')
			continue;
		while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
			q++;
		if (*q++ != '"')
			continue;
		const char *end = strchr(q, '"');
		if (!end || (size_t)(end - q) >= outlen || memchr(q, '\\', (size_t)(end - q)))
			return -1;
		memcpy(out, q, (size_t)(end - q));
		out[end - q] = 0;
		return 0;
	}
	return -1;
}

/* The CNI versions the plugins speak (the agent's src/cni/spec.ts lists the same). */
static const char *const VERSIONS[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define NVERSIONS (sizeof(VERSIONS) / sizeof(VERSIONS[0]))

static const char *cni_version(const char *in)
{
	static char v[16];
	if (find_string(in, "cniVersion", v, sizeof(v)) == 0)
		for (size_t i = 0; i < NVERSIONS; i++)
			if (strcmp(v, VERSIONS[i]) == 0)
				return v;
	return "1.1.0";
}

/* VERSION: answered here, without the agent. */
static int version_info(const char *version)
{
	printf("{\"cniVersion\":\"%s\",\"supportedVersions\":[", version);
	for (size_t i = 0; i < NVERSIONS; i++)
		printf("%s\"%s\"", i ? "," : "", VERSIONS[i]);
	printf("]}\n");
	return 0;
}

static int fail(const char *version, int code, const char *msg, const char *details)
{
	struct buf b = {0};
	puts_(&b, "{\"cniVersion\":\"");
	puts_(&b, version);
	puts_(&b, "\",\"code\":");
	char num[16];
	snprintf(num, sizeof(num), "%d", code);
	puts_(&b, num);
	puts_(&b, ",\"msg\":");
	put_json(&b, msg, strlen(msg));
	puts_(&b, ",\"details\":");
	put_json(&b, details, strlen(details));
	puts_(&b, "}\n");
	fputs(b.p, stdout);
	return 1;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads stdin (the network config) into `in`; -1 when it is larger than MAX_STDIN. */
static int read_config(struct buf *in)
{
	put(in, "", 0);
	if (isatty(0))
		return 0;
	char chunk[65536];
	ssize_t n;
	while ((n = read(0, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (in->len + (size_t)n > MAX_STDIN)
			return -1;
		put(in, chunk, (size_t)n);
	}
	return 0;
}

/* The request line: `cni {"role","env":{CNI_* variables},"stdin"}` and a newline. */
static void build_request(struct buf *req, const char *role, const struct buf *in)
{
	puts_(req, "cni {\"role\":\"");
	puts_(req, role);
	puts_(req, "\",\"env\":{");
	int first = 1;
	for (char **e = environ; *e; e++) {
		const char *eq = strchr(*e, '=');
		if (strncmp(*e, "CNI_", 4) != 0 || !eq)
			continue;
		if (!first)
			put(req, ",", 1);
		first = 0;
		put_json(req, *e, (size_t)(eq - *e));
		put(req, ":", 1);
		put_json(req, eq + 1, strlen(eq + 1));
	}
	puts_(req, "},\"stdin\":");
	put_json(req, in->p, in->len);
	puts_(req, "}\n");
}

/* Sends the request to the agent at `path` and prints its answer (`cni-reply <exit> <len>\n` + len bytes). */
static int exchange(const char *path, const struct buf *req, const char *version, int unavailable)
{
	char msg[512];
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, path, strlen(path) + 1);
	struct timeval tv = {.tv_sec = TIMEOUT_SEC};
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		snprintf(msg, sizeof(msg), "the weft agent is unreachable on %s: %s", path, strerror(errno));
		return fail(version, unavailable, msg,
			    "is the weft agent running on this node? Its --control-socket must match \"controlSocket\" in the CNI config "
			    "(or $WEFT_CONTROL_SOCKET, or /run/weft/agent.sock)");
	}
	if (write_all(fd, req->p, req->len) != 0) {
		snprintf(msg, sizeof(msg), "sending to the weft agent on %s failed: %s", path, strerror(errno));
		return fail(version, unavailable, msg, "");
	}

	struct buf rep = {0};
	size_t need = 0, body = 0;
	int exit_code = -1;
	for (;;) {
		char chunk[65536];
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(msg, sizeof(msg), "the weft agent on %s %s before it answered", path,
				 n == 0 ? "closed the connection" : (errno == EAGAIN ? "timed out" : strerror(errno)));
			return fail(version, unavailable, msg, "see the agent's log");
		}
		put(&rep, chunk, (size_t)n);
		if (exit_code < 0) {
			char *nl = memchr(rep.p, '\n', rep.len);
			if (!nl)
				continue;
			if (sscanf(rep.p, "cni-reply %d %zu", &exit_code, &need) != 2 || exit_code < 0)
				return fail(version, unavailable, "the weft agent sent a malformed reply", "are the plugin and the agent the same weft version?");
			body = (size_t)(nl - rep.p) + 1;
		}
		if (rep.len - body >= need)
			break;
	}
	if (write_all(1, rep.p + body, need) != 0)
		return 1;
	if (need > 0 && rep.p[body + need - 1] != '\n')
		write_all(1, "\n", 1);
	return exit_code;
}

int main(int argc, char **argv)
{
	(void)argc;
	const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	size_t sl = strlen(self);
	const char *role = sl >= 5 && strcmp(self + sl - 5, "-ipam") == 0 ? "weft-ipam" : "weft";
	const char *cmd = getenv("CNI_COMMAND");

	struct buf in = {0};
	if (read_config(&in) != 0)
		return fail("1.1.0", 6, "the network config on stdin is larger than 4 MiB", "");
	const char *version = cni_version(in.p);
	if (cmd && strcmp(cmd, "VERSION") == 0)
		return version_info(version);

	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	if (find_string(in.p, "controlSocket", path, sizeof(path)) != 0) {
		const char *env = getenv("WEFT_CONTROL_SOCKET");
		snprintf(path, sizeof(path), "%s", env && *env ? env : DEFAULT_SOCKET);
	}
	struct buf req = {0};
	build_request(&req, role, &in);
	return exchange(path, &req, version, cmd && strcmp(cmd, "STATUS") == 0 ? 50 : 11);
}
