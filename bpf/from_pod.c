/* weft_from_pod: tc ingress of each local pod's host-side veth.
 * Local destination: straight into that pod. Remote pod subnet: tunnel key
 * + redirect to the VXLAN device. Anything else: the kernel stack. */
#include "lib/pod.h"

SEC("tc")
int weft_from_pod(struct __sk_buff *ctx)
{
	int ret = handle_from_pod(ctx);

	return ret < 0 ? drop(ctx, ret) : ret;
}

char _license[] SEC("license") = "GPL";
