/* Test entry points for BPF_PROG_TEST_RUN. A test run has no tunnel
 * metadata, so this variant of the overlay program takes the outer source
 * address and VNI from the skb's cb[0] and cb[1] (set through ctx_in) and
 * runs the same handle_overlay() as weft_from_overlay. */
#include "../lib/overlay.h"

SEC("tc")
int test_overlay(struct __sk_buff *ctx)
{
	int ret = handle_overlay(ctx, ctx->cb[0], ctx->cb[1]);

	return ret < 0 ? drop(ctx, ret) : ret;
}

char _license[] SEC("license") = "GPL";
