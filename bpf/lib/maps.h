/* Every map weft's programs use, in one place, each with its purpose.
 * Declared __weak: each program file includes this header, and the static
 * linker (bpftool gen object) merges the identical definitions into one map.
 * Layouts are mirrored in src/backend/ebpf/maps.ts; LAYOUT_VERSION is
 * stored in weft_config so that a loader can tell a pinned map from an
 * older build (and migrate it) before reusing it.
 */
#pragma once
#include "common.h"

#define LAYOUT_VERSION 2

/* IPv4 LPM trie key. */
struct route_key {
	__u32 prefixlen; /* LPM trie: bits of addr that count */
	__be32 addr;
};

/* IPv6 LPM trie key. */
struct route6_key {
	__u32 prefixlen; /* 0..128 */
	struct in6_addr addr;
};

/* node_info.flags: which pod subnets the node owns (an IPv6-only node owns
 * no IPv4 subnet, an IPv4-only node no IPv6 one; anti-spoofing accepts no
 * inner source of a family the node has no subnet of). */
#define NODE_SUBNET4 1
#define NODE_SUBNET6 2

/* A remote node, the value of every route and node map. It has up to two
 * underlay addresses; the outer family is chosen per packet, independently
 * of the inner one (tunnel_to() in pod.h): the inner packet's own family
 * when the node has that underlay, else the other. Each underlay has its
 * VTEP MAC (flannel's IPv6 device has its own MAC). The first 20 bytes are
 * layout 1's node_info. */
struct node_info {
	__be32 underlay;	    /* IPv4 underlay; 0 when none (or unreachable from here) */
	__u8 vtep_mac[ETH_ALEN];   /* inner destination MAC for frames over the IPv4 underlay */
	__u8 flags;		    /* NODE_SUBNET4 | NODE_SUBNET6 */
	__u8 pad;
	__be32 subnet;		    /* the IPv4 pod subnet it owns (anti-spoofing) */
	__be32 mask;
	struct in6_addr underlay6; /* IPv6 underlay; :: when none (or unreachable from here) */
	__u8 vtep_mac6[ETH_ALEN];  /* inner destination MAC for frames over the IPv6 underlay */
	__u16 pad6;
	struct in6_addr subnet6;   /* the IPv6 pod subnet it owns, host bits clear */
	struct in6_addr mask6;
};

struct endpoint {
	__u32 ifindex;		    /* host-side veth of the pod */
	__u8 mac[ETH_ALEN];	    /* the pod's MAC (inner destination) */
	__u8 host_mac[ETH_ALEN];   /* source MAC the pod sees (its gateway) */
};

struct config {
	__u32 layout;		    /* LAYOUT_VERSION of the loader that wrote it */
	__u32 vxlan_ifindex;	    /* the collect_md (external) VXLAN device */
	__u32 vni;
	__u8 vtep_mac[ETH_ALEN];   /* our VTEP MAC: inner source we send, destination we accept */
	__u16 pad;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* Remote IPv4 pod subnets -> the node that owns them (the data path's route table). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct route_key);
	__type(value, struct node_info);
} weft_routes SEC(".maps") __weak;

/* Remote IPv6 pod subnets -> the node that owns them. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct route6_key);
	__type(value, struct node_info);
} weft_routes6 SEC(".maps") __weak;

/* IPv4 underlay address -> node: who may send us overlay traffic over IPv4, from which subnets. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __be32);
	__type(value, struct node_info);
} weft_nodes SEC(".maps") __weak;

/* IPv6 underlay address -> node: the same for overlay traffic over IPv6. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct in6_addr);
	__type(value, struct node_info);
} weft_nodes6 SEC(".maps") __weak;

/* Local pod IPv4 address -> where and how to deliver to it (and which veth may send from it). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32);
	__type(value, struct endpoint);
} weft_endpoints SEC(".maps") __weak;

/* Local pod IPv6 address -> the same, for the pod's IPv6 address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct in6_addr);
	__type(value, struct endpoint);
} weft_endpoints6 SEC(".maps") __weak;

/* This node's tunnel parameters (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} weft_config SEC(".maps") __weak;

/* Packets and bytes per reason (enum weft_reason), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_MAX);
	__type(key, __u32);
	__type(value, struct counter);
} weft_counters SEC(".maps") __weak;

static __always_inline void count(struct __sk_buff *ctx, __u32 reason)
{
	struct counter *c = bpf_map_lookup_elem(&weft_counters, &reason);

	if (c) {
		c->packets++;
		c->bytes += ctx->len;
	}
}

/* The single drop exit: counts the reason of a negative code, then drops. */
static __always_inline int drop(struct __sk_buff *ctx, int code)
{
	count(ctx, (__u32)(-code));
	return TC_ACT_SHOT;
}

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&weft_config, &zero);
}
