/* Every map weft's programs use, in one place, each with its purpose.
 * Declared __weak: each program file includes this header, and the static
 * linker (bpftool gen object) merges the identical definitions into one map.
 * Layouts are mirrored in src/backend/ebpf/maps.ts; LAYOUT_VERSION is
 * stored in weft_config so that a loader can tell a pinned map from an
 * older build (and migrate it) before reusing it.
 */
#pragma once
#include "common.h"

#define LAYOUT_VERSION 1

struct route_key {
	__u32 prefixlen; /* LPM trie: bits of addr that count */
	__be32 addr;
};

struct node_info {
	__be32 underlay;	    /* where its VXLAN traffic comes from / goes to */
	__u8 vtep_mac[ETH_ALEN];   /* inner destination MAC for frames to it */
	__u16 pad;
	__be32 subnet;		    /* the pod subnet it owns (anti-spoofing) */
	__be32 mask;
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

/* Remote pod subnets -> the node that owns them (the data path's route table). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct route_key);
	__type(value, struct node_info);
} weft_routes SEC(".maps") __weak;

/* Underlay address -> node: who may send us overlay traffic, from which subnet. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __be32);
	__type(value, struct node_info);
} weft_nodes SEC(".maps") __weak;

/* Local pod address -> where and how to deliver to it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32);
	__type(value, struct endpoint);
} weft_endpoints SEC(".maps") __weak;

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
