/* Packet access: bounds-checked header pointers and in-place rewrites. */
#pragma once
#include "common.h"

/* Returns the IPv4 header of an Ethernet/IPv4 frame, or NULL when the frame
 * is shorter than both headers or the IPv4 header is not well formed
 * (version 4, IHL >= 5, total length covering the header and covered by the
 * frame, as ip_rcv requires). The caller has checked that the EtherType is
 * IPv4. The verifier needs the explicit `ip + 1 > end` comparison on the
 * same pointer it later dereferences.
 */
static __always_inline struct iphdr *ipv4_hdr(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + ETH_HLEN;

	if ((void *)(ip + 1) > end)
		return NULL;
	if (ip->version != 4 || ip->ihl < 5)
		return NULL;
	if (bpf_ntohs(ip->tot_len) < ip->ihl * 4 || bpf_ntohs(ip->tot_len) > ctx->len - ETH_HLEN)
		return NULL;
	return ip;
}

/* Returns the IPv6 header of an Ethernet/IPv6 frame, or NULL when the frame
 * is shorter than both headers, the version is not 6 or the payload length
 * reaches past the frame (as ipv6_rcv requires; a payload length of 0, a
 * jumbogram's, is the kernel's to judge). The caller has checked the
 * EtherType. */
static __always_inline struct ipv6hdr *ipv6_hdr(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN;

	if ((void *)(ip6 + 1) > end)
		return NULL;
	if (ip6->version != 6)
		return NULL;
	if (bpf_ntohs(ip6->payload_len) + sizeof(*ip6) > ctx->len - ETH_HLEN)
		return NULL;
	return ip6;
}

static __always_inline int in6_eq(const struct in6_addr *a, const struct in6_addr *b)
{
	return a->in6_u.u6_addr32[0] == b->in6_u.u6_addr32[0] && a->in6_u.u6_addr32[1] == b->in6_u.u6_addr32[1] &&
	       a->in6_u.u6_addr32[2] == b->in6_u.u6_addr32[2] && a->in6_u.u6_addr32[3] == b->in6_u.u6_addr32[3];
}

static __always_inline int in6_is_zero(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] | a->in6_u.u6_addr32[3]) == 0;
}

/* (a & mask) == net, for an address in the packet and a prefix from a map. */
static __always_inline int in6_in_prefix(const struct in6_addr *a, const struct in6_addr *net, const struct in6_addr *mask)
{
	return (a->in6_u.u6_addr32[0] & mask->in6_u.u6_addr32[0]) == net->in6_u.u6_addr32[0] &&
	       (a->in6_u.u6_addr32[1] & mask->in6_u.u6_addr32[1]) == net->in6_u.u6_addr32[1] &&
	       (a->in6_u.u6_addr32[2] & mask->in6_u.u6_addr32[2]) == net->in6_u.u6_addr32[2] &&
	       (a->in6_u.u6_addr32[3] & mask->in6_u.u6_addr32[3]) == net->in6_u.u6_addr32[3];
}

/* Link-scoped sources (fe80::/10 link-local, :: of duplicate address
 * detection): the kernel never forwards a packet from one (ip6_forward
 * refuses them), so it may have them; they are how a pod does neighbour
 * discovery and MLD. */
static __always_inline int in6_link_scoped_src(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr8[0] == 0xfe && (a->in6_u.u6_addr8[1] & 0xc0) == 0x80) || in6_is_zero(a);
}

/* Neighbour discovery (ICMPv6 133-137: router and neighbour solicitation
 * and advertisement, redirect) directly after the IPv6 header. RFC 4861
 * has the receiver drop it unless the hop limit is still 255, so it must
 * never be routed (a routed copy arrives with 254): it is the link's, and
 * the kernel switches it on the bridge or answers it on the host side. */
static __always_inline int ipv6_is_ndisc(struct __sk_buff *ctx, const struct ipv6hdr *ip6)
{
	void *end = (void *)(long)ctx->data_end;
	const __u8 *icmp = (const __u8 *)(ip6 + 1);

	if (ip6->nexthdr != 58 /* IPPROTO_ICMPV6 */ || (void *)(icmp + 1) > end)
		return 0;
	return icmp[0] >= 133 && icmp[0] <= 137;
}

static __always_inline struct ethhdr *eth_hdr(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return NULL;
	return eth;
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b && *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

/* Decrements the TTL and fixes the header checksum, as a router does.
 * Returns 0, or DROP_REDIRECT when a helper fails. Invalidates packet pointers. */
static __always_inline int ttl_dec(struct __sk_buff *ctx, __u8 ttl)
{
	/* The checksum covers TTL and protocol as one 16-bit word: TTL is its high byte. */
	__be16 old = bpf_htons((__u16)ttl << 8);
	__be16 neu = bpf_htons((__u16)(ttl - 1) << 8);

	if (bpf_l3_csum_replace(ctx, IP_CSUM_OFF, old, neu, sizeof(__u16)) < 0)
		return DROP_REDIRECT;
	ttl--;
	if (bpf_skb_store_bytes(ctx, IP_TTL_OFF, &ttl, 1, 0) < 0)
		return DROP_REDIRECT;
	return 0;
}

/* IPv6 has no header checksum: the hop limit is just one byte less.
 * Returns 0 or DROP_REDIRECT. Invalidates packet pointers. */
static __always_inline int hop_dec6(struct __sk_buff *ctx, __u8 hop)
{
	hop--;
	if (bpf_skb_store_bytes(ctx, IP6_HLIM_OFF, &hop, 1, 0) < 0)
		return DROP_REDIRECT;
	return 0;
}

/* Writes destination and source MACs. Returns 0 or DROP_REDIRECT. Invalidates packet pointers. */
static __always_inline int set_macs(struct __sk_buff *ctx, const __u8 *dst, const __u8 *src)
{
	if (bpf_skb_store_bytes(ctx, 0, dst, ETH_ALEN, 0) < 0 || bpf_skb_store_bytes(ctx, ETH_ALEN, src, ETH_ALEN, 0) < 0)
		return DROP_REDIRECT;
	return 0;
}
