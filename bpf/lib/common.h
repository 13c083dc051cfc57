/* Shared definitions for weft's tc programs: packet constants, result
 * reasons and the single drop exit.
 *
 * Contract of the helpers in lib/: they return a tc action (>= 0) when the
 * packet's fate is decided, or a negative DROP_* code. Programs pass any
 * negative value to drop(), the one place packets are dropped and counted.
 */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* uapi #defines that BTF does not carry */
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define TC_ACT_REDIRECT 7
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_ALEN 6
#define ETH_HLEN 14
#define BPF_F_ZERO_CSUM_TX (1ULL << 1)
#define IP_TTL_OFF (ETH_HLEN + offsetof(struct iphdr, ttl))
#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP6_HLIM_OFF (ETH_HLEN + offsetof(struct ipv6hdr, hop_limit))
/* Outer TTL / hop limit of what we encapsulate (the kernel vxlan device's default, as flannel leaves it). */
#define TUNNEL_TTL 64

/* Counter slots (weft_counters), named in src/dataplane/reasons.ts (BPF_REASONS; test/structure/reasons.test.ts checks them). */
enum weft_reason {
	REASON_FORWARDED = 0,	 /* a pod's packet sent into the overlay */
	REASON_DELIVERED = 1,	 /* redirected straight into a local pod */
	REASON_PASSED = 2,	 /* handed to the kernel stack */
	REASON_TO_OVERLAY = 3,	 /* host packet given a tunnel key at the device's egress */
	REASON_MALFORMED = 4,	 /* truncated or not a well-formed IPv4 / IPv6 header */
	REASON_BAD_VNI = 5,	 /* overlay packet with another VNI */
	REASON_BAD_DST_MAC = 6,	 /* overlay frame not addressed to our VTEP MAC */
	REASON_UNKNOWN_NODE = 7, /* overlay packet from an underlay address that is no node */
	REASON_SPOOFED = 8,	 /* inner source outside the sending node's subnet */
	REASON_POD_SPOOFED = 9,	 /* a pod sent with a source address that is not its own (IPv4 or IPv6) */
	REASON_NO_ROUTE = 10,	 /* host packet on the device for a subnet no node owns */
	REASON_NO_TUNNEL = 11,	 /* overlay packet without tunnel metadata */
	REASON_REDIRECT_FAILED = 12,	 /* a redirect or tunnel-key helper failed */
	REASON_MAX = 13,
};

/* Negative drop codes: -DROP_x is the counter slot. */
#define DROP_MALFORMED (-REASON_MALFORMED)
#define DROP_BAD_VNI (-REASON_BAD_VNI)
#define DROP_BAD_DST_MAC (-REASON_BAD_DST_MAC)
#define DROP_UNKNOWN_NODE (-REASON_UNKNOWN_NODE)
#define DROP_SPOOFED (-REASON_SPOOFED)
#define DROP_POD_SPOOFED (-REASON_POD_SPOOFED)
#define DROP_NO_ROUTE (-REASON_NO_ROUTE)
#define DROP_NO_TUNNEL (-REASON_NO_TUNNEL)
#define DROP_REDIRECT (-REASON_REDIRECT_FAILED)
