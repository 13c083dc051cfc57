/* Packets on the overlay device: decapsulated arrivals (ingress) and host
 * packets routed into it (egress). */
#pragma once
#include "maps.h"
#include "packet.h"
#include "pod.h"

/* An arrival from `outer` (underlay source, network order) with `vni`:
 * accepted only from a known node and from inside that node's subnet
 * (flannel accepts any source), then delivered to the pod or passed to the
 * stack (traffic for the node itself). */
static __always_inline int handle_overlay(struct __sk_buff *ctx, __be32 outer, __u32 vni)
{
	struct ethhdr *eth = eth_hdr(ctx);
	struct node_info *node;
	struct endpoint *ep;
	struct config *cfg;
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
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		goto pass;
	ip = ipv4_hdr(ctx);
	if (!ip)
		return DROP_MALFORMED;
	node = bpf_map_lookup_elem(&weft_nodes, &outer);
	if (!node)
		return DROP_UNKNOWN_NODE;
	if ((ip->saddr & node->mask) != node->subnet)
		return DROP_SPOOFED;
	daddr = ip->daddr;
	ep = bpf_map_lookup_elem(&weft_endpoints, &daddr);
	if (ep && ip->ttl > 1)
		return deliver(ctx, ep, ip->ttl);
pass:
	count(ctx, REASON_PASSED);
	return TC_ACT_OK;
}

/* A host packet routed into the device (the cluster route points there):
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
	struct route_key rk;
	struct iphdr *ip;

	if (!eth)
		return DROP_MALFORMED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return DROP_NO_ROUTE; /* an external device sends nothing without a key */
	ip = ipv4_hdr(ctx);
	if (!ip)
		return DROP_MALFORMED;
	cfg = get_config();
	if (!cfg)
		return DROP_NO_ROUTE;
	rk.prefixlen = 32;
	rk.addr = ip->daddr;
	node = bpf_map_lookup_elem(&weft_routes, &rk);
	if (!node)
		return DROP_NO_ROUTE;
	if (mac_eq(eth->h_dest, node->vtep_mac) && mac_eq(eth->h_source, cfg->vtep_mac))
		return TC_ACT_OK; /* forward() did it */
	if (set_tunnel_key(ctx, node, cfg) < 0)
		return DROP_REDIRECT;
	if (set_macs(ctx, node->vtep_mac, cfg->vtep_mac) < 0)
		return DROP_REDIRECT;
	count(ctx, REASON_TO_OVERLAY);
	return TC_ACT_OK;
}
