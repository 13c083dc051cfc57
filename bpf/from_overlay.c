/* weft_from_overlay: tc ingress of the collect_md VXLAN device, after the
 * kernel has decapsulated. Anti-spoofing by the tunnel's outer source (an
 * IPv4 or an IPv6 underlay address: the device listens on both), then
 * delivery into the pod. */
#include "lib/overlay.h"

SEC("tc")
int weft_from_overlay(struct __sk_buff *ctx)
{
	struct bpf_tunnel_key key = {};
	struct node_info *node;
	int ret;

	/* The helper answers -EPROTO when the flag does not match the tunnel's family. */
	if (bpf_skb_get_tunnel_key(ctx, &key, sizeof(key), 0) == 0)
		node = node_by_underlay4(bpf_htonl(key.remote_ipv4));
	else if (bpf_skb_get_tunnel_key(ctx, &key, sizeof(key), BPF_F_TUNINFO_IPV6) == 0)
		node = node_by_underlay6(key.remote_ipv6);
	else
		return drop(ctx, DROP_NO_TUNNEL);
	ret = handle_overlay(ctx, node, key.tunnel_id);
	return ret < 0 ? drop(ctx, ret) : ret;
}
