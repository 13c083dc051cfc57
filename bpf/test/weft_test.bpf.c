/* Test entry points for BPF_PROG_TEST_RUN. A test run has no tunnel
 * metadata, so these variants of the overlay program take the outer source
 * address and VNI from the skb's cb[] (set through ctx_in) and run the same
 * handle_overlay() as weft_from_overlay:
 *   test_overlay:  IPv4 outer source in cb[0] (network order), VNI in cb[1]
 *   test_overlay6: IPv6 outer source in cb[0..3] (network order), VNI in cb[4]
 * test_from_pod runs weft_from_pod's handle_from_pod() and then reads back
 * the tunnel key it set (if any) into weft_test_tunnel. */
#include "../lib/overlay.h"

struct tunnel_seen {
	__s32 rc4;		/* bpf_skb_get_tunnel_key without BPF_F_TUNINFO_IPV6 */
	__s32 rc6;		/* ... with it */
	struct bpf_tunnel_key key; /* what the successful call read (with BPF_F_TUNINFO_FLAGS) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tunnel_seen);
} weft_test_tunnel SEC(".maps");

SEC("tc")
int test_overlay(struct __sk_buff *ctx)
{
	int ret = handle_overlay(ctx, node_by_underlay4(ctx->cb[0]), ctx->cb[1]);

	return ret < 0 ? drop(ctx, ret) : ret;
}

SEC("tc")
int test_overlay6(struct __sk_buff *ctx)
{
	__u32 outer[4] = { ctx->cb[0], ctx->cb[1], ctx->cb[2], ctx->cb[3] };
	int ret = handle_overlay(ctx, node_by_underlay6(outer), ctx->cb[4]);

	return ret < 0 ? drop(ctx, ret) : ret;
}

SEC("tc")
int test_from_pod(struct __sk_buff *ctx)
{
	int ret = handle_from_pod(ctx);
	struct tunnel_seen *s;
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&weft_test_tunnel, &zero);
	if (s) {
		__builtin_memset(&s->key, 0, sizeof(s->key));
		s->rc4 = bpf_skb_get_tunnel_key(ctx, &s->key, sizeof(s->key), BPF_F_TUNINFO_FLAGS);
		s->rc6 = s->rc4 == 0 ? -1 : bpf_skb_get_tunnel_key(ctx, &s->key, sizeof(s->key), BPF_F_TUNINFO_IPV6 | BPF_F_TUNINFO_FLAGS);
	}
	return ret < 0 ? drop(ctx, ret) : ret;
}

char _license[] SEC("license") = "GPL";
