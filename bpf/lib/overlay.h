/* Packets on the overlay device: decapsulated arrivals (ingress) and host
 * packets routed into it (egress). */
#pragma once
#include "maps.h"
#include "packet.h"
#include "pod.h"

/* The node an IPv4 / IPv6 underlay address belongs to, or NULL. */
static __always_inline struct node_info *node_by_underlay4(__be32 outer)
{
	return bpf_map_lookup_elem(&weft_nodes, &outer);
}

static __always_inline struct node_info *node_by_underlay6(const __u32 *outer)
{
	struct in6_addr a;

	__builtin_memcpy(&a, outer, sizeof(a));
	return bpf_map_lookup_elem(&weft_nodes6, &a);
}

/* An arrival from `node` (looked up by the outer source, either family;
 * NULL when it is no node) with `vni`: accepted only from a known node and,
 * for either inner family, from inside that node's subnet of that family
 * (flannel accepts any source), then delivered to the pod or passed to the
 * stack (traffic for the node itself). */
static __always_inline int handle_overlay(struct __sk_buff *ctx, const struct node_info *node, __u32 vni)
{
	struct ethhdr *eth = eth_hdr(ctx);
	struct endpoint *ep;
	struct config *cfg;
	struct ipv6hdr *ip6;
	struct in6_addr d6;
	struct iphdr *ip;
	__be32 daddr;

	cfg = get_config();
	if (!cfg)
		goto pass;
	if (vni != cfg->vni)
		return DROP_BAD_VNI;
	if (!eth)
		return DROP_MALFORMED;
	if (!mac_eq(eth->h_dest, cfg->vtep_mac))
		return DROP_BAD_DST_MAC;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		ip6 = ipv6_hdr(ctx);
		if (!ip6)
			return DROP_MALFORMED;
		if (!node)
			return DROP_UNKNOWN_NODE;
		if (!(node->flags & NODE_SUBNET6) || !in6_in_prefix(&ip6->saddr, &node->subnet6, &node->mask6))
			return DROP_SPOOFED;
		__builtin_memcpy(&d6, &ip6->daddr, sizeof(d6));
		ep = bpf_map_lookup_elem(&weft_endpoints6, &d6);
		if (ep && ip6->hop_limit > 1)
			return deliver(ctx, ep, ip6->hop_limit, 1);
		goto pass;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		goto pass;
	ip = ipv4_hdr(ctx);
	if (!ip)
		return DROP_MALFORMED;
	if (!node)
		return DROP_UNKNOWN_NODE;
	if (!(node->flags & NODE_SUBNET4) || (ip->saddr & node->mask) != node->subnet)
		return DROP_SPOOFED;
	daddr = ip->daddr;
	ep = bpf_map_lookup_elem(&weft_endpoints, &daddr);
	if (ep && ip->ttl > 1)
		return deliver(ctx, ep, ip->ttl, 0);
pass:
	count(ctx, REASON_PASSED);
	return TC_ACT_OK;
}

/* The owning node of an inner destination, by family: IPv4 /32 or IPv6 /128 LPM lookup. */
static __always_inline struct node_info *route_of(struct __sk_buff *ctx, __be16 proto, int *inner6)
{
	struct route6_key k6;
	struct route_key k4;
	struct ipv6hdr *ip6;
	struct iphdr *ip;

	if (proto == bpf_htons(ETH_P_IPV6)) {
		ip6 = ipv6_hdr(ctx);
		if (!ip6)
			return NULL;
		*inner6 = 1;
		k6.prefixlen = 128;
		__builtin_memcpy(&k6.addr, &ip6->daddr, sizeof(k6.addr));
		return bpf_map_lookup_elem(&weft_routes6, &k6);
	}
	ip = ipv4_hdr(ctx);
	if (!ip)
		return NULL;
	*inner6 = 0;
	k4.prefixlen = 32;
	k4.addr = ip->daddr;
	return bpf_map_lookup_elem(&weft_routes, &k4);
}

/* A host packet routed into the device (the cluster routes point there):
 * give it the tunnel key and inner MACs of the node owning its destination.
 * A pod packet redirected here by forward() passes through this hook too; it
 * already carries the key (which bpf_skb_get_tunnel_key cannot read back on
 * transmit) and the node's MACs, which a host packet cannot have (the device
 * does no ARP, so the kernel puts the device's own MAC there): those MACs
 * tell the two apart and spare forward()'s packets a second rewrite. */
static __always_inline int handle_to_overlay(struct __sk_buff *ctx)
{
	struct ethhdr *eth = eth_hdr(ctx);
	struct node_info *node;
	struct config *cfg;
	const __u8 *mac;
	int inner6 = 0, outer6;
	__be16 proto;

	if (!eth)
		return DROP_MALFORMED;
	proto = eth->h_proto;
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
		return DROP_NO_ROUTE; /* an external device sends nothing without a key */
	/* The header is checked before anything else, as for IPv4 before. */
	if (proto == bpf_htons(ETH_P_IPV6) ? !ipv6_hdr(ctx) : !ipv4_hdr(ctx))
		return DROP_MALFORMED;
	cfg = get_config();
	if (!cfg)
		return DROP_NO_ROUTE;
	node = route_of(ctx, proto, &inner6);
	if (!node)
		return DROP_NO_ROUTE;
	mac = tunnel_to(node, inner6, &outer6);
	if (!mac)
		return DROP_NO_ROUTE;
	eth = eth_hdr(ctx);
	if (!eth)
		return DROP_MALFORMED;
	if (mac_eq(eth->h_dest, mac) && mac_eq(eth->h_source, cfg->vtep_mac))
		return TC_ACT_OK; /* forward() did it */
	if (set_tunnel_key(ctx, node, cfg, outer6) < 0)
		return DROP_REDIRECT;
	if (set_macs(ctx, mac, cfg->vtep_mac) < 0)
		return DROP_REDIRECT;
	count(ctx, REASON_TO_OVERLAY);
	return TC_ACT_OK;
}
