/* Packets from a local pod (tc ingress of its host-side veth), IPv4 and IPv6. */
#pragma once
#include "maps.h"
#include "packet.h"

/* Which underlay carries a packet of the inner family (`inner6`) to `node`:
 * that family's when the node has it, else the other one (a dual-stack
 * node reachable over one family only carries both inner families there).
 * Sets *outer6 and returns the VTEP MAC belonging to that underlay, or NULL
 * when the node has no underlay at all. */
static __always_inline const __u8 *tunnel_to(const struct node_info *node, int inner6, int *outer6)
{
	int has4 = node->underlay != 0;
	int has6 = !in6_is_zero(&node->underlay6);

	if (inner6 ? has6 : !has4 && has6) {
		*outer6 = 1;
		return node->vtep_mac6;
	}
	*outer6 = 0;
	return has4 ? node->vtep_mac : NULL;
}

/* The collect_md device's instructions for one packet: send to the node's
 * underlay address with our VNI. Over IPv4 the outer UDP checksum is zero,
 * as Linux sends it; over IPv6 it is computed (the kernel vxlan device, and
 * so flannel's, refuses zero-checksum UDP over IPv6 unless udp6zerocsumrx). */
static __always_inline int set_tunnel_key(struct __sk_buff *ctx, const struct node_info *node, const struct config *cfg, int outer6)
{
	struct bpf_tunnel_key key = {};

	key.tunnel_id = cfg->vni;
	key.tunnel_ttl = TUNNEL_TTL;
	if (outer6) {
		__builtin_memcpy(key.remote_ipv6, &node->underlay6, sizeof(key.remote_ipv6));
		return bpf_skb_set_tunnel_key(ctx, &key, sizeof(key), BPF_F_TUNINFO_IPV6);
	}
	key.remote_ipv4 = bpf_ntohl(node->underlay);
	return bpf_skb_set_tunnel_key(ctx, &key, sizeof(key), BPF_F_ZERO_CSUM_TX);
}

/* Redirects into the pod at `ep` (another local pod, or the destination of
 * overlay traffic): TTL / hop limit - 1, MACs as a router would set them,
 * then straight into the pod's namespace with bpf_redirect_peer (no second
 * pass through the host stack). Returns TC_ACT_REDIRECT or a drop code. */
static __always_inline int deliver(struct __sk_buff *ctx, const struct endpoint *ep, __u8 ttl, int inner6)
{
	int ret = inner6 ? hop_dec6(ctx, ttl) : ttl_dec(ctx, ttl);

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
static __always_inline int forward(struct __sk_buff *ctx, const struct node_info *node, const struct config *cfg, __u8 ttl, int inner6)
{
	const __u8 *mac;
	int outer6, ret;

	mac = tunnel_to(node, inner6, &outer6);
	if (!mac)
		return DROP_NO_ROUTE;
	if (set_tunnel_key(ctx, node, cfg, outer6) < 0)
		return DROP_REDIRECT;
	ret = inner6 ? hop_dec6(ctx, ttl) : ttl_dec(ctx, ttl);
	if (ret < 0)
		return ret;
	ret = set_macs(ctx, mac, cfg->vtep_mac);
	if (ret < 0)
		return ret;
	count(ctx, REASON_FORWARDED);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

static __always_inline int pass(struct __sk_buff *ctx)
{
	count(ctx, REASON_PASSED);
	return TC_ACT_OK;
}

static __always_inline int pod_ipv4(struct __sk_buff *ctx)
{
	struct endpoint *self, *dst;
	struct node_info *node;
	struct config *cfg;
	struct route_key key;
	struct iphdr *ip;
	__be32 daddr;
	__u8 ttl;

	ip = ipv4_hdr(ctx);
	if (!ip)
		return DROP_MALFORMED;
	cfg = get_config();
	if (!cfg)
		return pass(ctx);
	/* A pod sends from its own address only. */
	self = bpf_map_lookup_elem(&weft_endpoints, &ip->saddr);
	if (!self || self->ifindex != ctx->ifindex)
		return DROP_POD_SPOOFED;
	ttl = ip->ttl;
	if (ttl <= 1)
		return pass(ctx); /* the kernel sends ICMP time exceeded */
	daddr = ip->daddr;
	dst = bpf_map_lookup_elem(&weft_endpoints, &daddr);
	if (dst)
		return deliver(ctx, dst, ttl, 0);
	key.prefixlen = 32;
	key.addr = daddr;
	node = bpf_map_lookup_elem(&weft_routes, &key);
	if (node)
		return forward(ctx, node, cfg, ttl, 0);
	return pass(ctx);
}

/* IPv6 as IPv4, with two differences: link-scoped sources (link-local, ::)
 * go to the kernel unchecked; and neighbour discovery from the pod's own
 * address (a pod answering another pod's solicitation) goes to the kernel
 * too, after the spoofing check, since routing it would cost the hop limit
 * of 255 the receiver insists on. They carry the pod's neighbour discovery
 * (NS/NA for its gateway, DAD) and MLD, which the kernel answers on the
 * host side exactly as it answers the pod's ARP; and the kernel forwards
 * nothing from such a source, so they cannot leave the node. */
static __always_inline int pod_ipv6(struct __sk_buff *ctx)
{
	struct endpoint *self, *dst;
	struct node_info *node;
	struct route6_key key;
	struct config *cfg;
	struct ipv6hdr *ip6;
	__u8 hop;

	ip6 = ipv6_hdr(ctx);
	if (!ip6)
		return DROP_MALFORMED;
	cfg = get_config();
	if (!cfg)
		return pass(ctx);
	if (in6_link_scoped_src(&ip6->saddr))
		return pass(ctx);
	self = bpf_map_lookup_elem(&weft_endpoints6, &ip6->saddr);
	if (!self || self->ifindex != ctx->ifindex)
		return DROP_POD_SPOOFED;
	if (ipv6_is_ndisc(ctx, ip6))
		return pass(ctx); /* e.g. a pod's NA to a pod on its bridge: the link's, never routed */
	hop = ip6->hop_limit;
	if (hop <= 1)
		return pass(ctx); /* the kernel sends ICMPv6 time exceeded */
	__builtin_memcpy(&key.addr, &ip6->daddr, sizeof(key.addr));
	dst = bpf_map_lookup_elem(&weft_endpoints6, &key.addr);
	if (dst)
		return deliver(ctx, dst, hop, 1);
	key.prefixlen = 128;
	node = bpf_map_lookup_elem(&weft_routes6, &key);
	if (node)
		return forward(ctx, node, cfg, hop, 1);
	return pass(ctx);
}

/* The whole decision for a pod's packet. */
static __always_inline int handle_from_pod(struct __sk_buff *ctx)
{
	struct ethhdr *eth = eth_hdr(ctx);

	if (!eth)
		return DROP_MALFORMED;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return pod_ipv4(ctx);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return pod_ipv6(ctx);
	return pass(ctx); /* ARP and the rest: the kernel's business */
}
