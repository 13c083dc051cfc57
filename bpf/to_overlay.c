/* weft_to_overlay: tc egress of the collect_md VXLAN device. Host packets
 * routed into the device get the tunnel key of the node owning their
 * destination (the device sends nothing without one). */
#include "lib/overlay.h"

SEC("tc")
int weft_to_overlay(struct __sk_buff *ctx)
{
	int ret = handle_to_overlay(ctx);

	return ret < 0 ? drop(ctx, ret) : ret;
}
