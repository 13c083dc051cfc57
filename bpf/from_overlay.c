/* weft_from_overlay: tc ingress of the collect_md VXLAN device, after the
 * kernel has decapsulated. Anti-spoofing by the tunnel's outer source, then
 * delivery into the pod. */
#include "lib/overlay.h"

SEC("tc")
int weft_from_overlay(struct __sk_buff *ctx)
{
	struct bpf_tunnel_key key = {};
	int ret;

	if (bpf_skb_get_tunnel_key(ctx, &key, sizeof(key), 0) < 0)
		return drop(ctx, DROP_NO_TUNNEL);
	ret = handle_overlay(ctx, bpf_htonl(key.remote_ipv4), key.tunnel_id);
	return ret < 0 ? drop(ctx, ret) : ret;
}
