/* Packets from a local pod (tc ingress of its host-side veth). */
#pragma once
#include "maps.h"
#include "packet.h"

/* The collect_md device's instructions for one packet: send to the node's
 * underlay address with our VNI (outer UDP checksum zero, as Linux sends). */
static __always_inline int set_tunnel_key(struct __sk_buff *ctx, const struct node_info *node, const struct config *cfg)
{
	struct bpf_tunnel_key key = {};

	key.remote_ipv4 = bpf_ntohl(node->underlay);
	key.tunnel_id = cfg->vni;
	key.tunnel_ttl = TUNNEL_TTL;
	return bpf_skb_set_tunnel_key(ctx, &key, sizeof(key), BPF_F_ZERO_CSUM_TX);
}

/* Redirects into the pod at `ep` (another local pod, or the destination of
 * overlay traffic): TTL - 1, MACs as a router would set them, then straight
 * into the pod's namespace with bpf_redirect_peer (no second pass through
 * the host stack). Returns TC_ACT_REDIRECT or a drop code. */
static __always_inline int deliver(struct __sk_buff *ctx, const struct endpoint *ep, __u8 ttl)
{
	int ret = ttl_dec(ctx, ttl);

	if (ret < 0)
		return ret;
	ret = set_macs(ctx, ep->mac, ep->host_mac);
	if (ret < 0)
		return ret;
	count(ctx, REASON_DELIVERED);
	ret = bpf_redirect_peer(ep->ifindex, 0);
	return ret == TC_ACT_REDIRECT ? ret : DROP_REDIRECT;
}

/* Sends a pod's packet to the node owning its destination: the tunnel key
 * (outer destination, VNI) goes on the skb for the collect_md VXLAN device,
 * the inner MACs become ours and the node's VTEP MAC (what a flannel node's
 * device accepts), and the device encapsulates, with GSO intact. */
static __always_inline int forward(struct __sk_buff *ctx, const struct node_info *node, const struct config *cfg, __u8 ttl)
{
	int ret;

	if (set_tunnel_key(ctx, node, cfg) < 0)
		return DROP_REDIRECT;
	ret = ttl_dec(ctx, ttl);
	if (ret < 0)
		return ret;
	ret = set_macs(ctx, node->vtep_mac, cfg->vtep_mac);
	if (ret < 0)
		return ret;
	count(ctx, REASON_FORWARDED);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

/* The whole decision for a pod's packet. */
static __always_inline int handle_from_pod(struct __sk_buff *ctx)
{
	struct ethhdr *eth = eth_hdr(ctx);
	struct endpoint *self, *dst;
	struct node_info *node;
	struct config *cfg;
	struct route_key key;
	struct iphdr *ip;
	__be32 daddr;
	__u8 ttl;

	if (!eth)
		return DROP_MALFORMED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		goto pass; /* ARP, IPv6: the kernel's business */
	ip = ipv4_hdr(ctx);
	if (!ip)
		return DROP_MALFORMED;
	cfg = get_config();
	if (!cfg)
		goto pass;
	/* A pod sends from its own address only. */
	self = bpf_map_lookup_elem(&weft_endpoints, &ip->saddr);
	if (!self || self->ifindex != ctx->ifindex)
		return DROP_POD_SPOOFED;
	ttl = ip->ttl;
	if (ttl <= 1)
		goto pass; /* the kernel sends ICMP time exceeded */
	daddr = ip->daddr;
	dst = bpf_map_lookup_elem(&weft_endpoints, &daddr);
	if (dst)
		return deliver(ctx, dst, ttl);
	key.prefixlen = 32;
	key.addr = daddr;
	node = bpf_map_lookup_elem(&weft_routes, &key);
	if (node)
		return forward(ctx, node, cfg, ttl);
pass:
	count(ctx, REASON_PASSED);
	return TC_ACT_OK;
}
