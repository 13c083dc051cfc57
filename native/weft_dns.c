/* weft's native batch I/O for the node-local DNS server's UDP hot path.
 *
 * One call receives a batch of queries (recvmmsg) and one call sends a batch
 * of answers (sendmmsg), so a JavaScript handler pays two crossings per
 * batch instead of a libuv read and a send per packet. Buffers are Node
 * Buffers of fixed-size slots; meta holds DNS4_META (IPv4) or DNS6_META
 * (IPv6, the *6 functions) int32 per message, laid out below. Functions
 * return a count or -errno.
 * Both run on the main thread: the poll addon (weft_poll.c) says when the
 * socket is readable, and the receive call then takes what is queued with
 * timeout_ms 0 (it never blocks); the send call is non-blocking. Their
 * scratch arrays are thread-local.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define DNS_MAX_BATCH 256

/* meta per IPv4 message (int32), DNS4_META of them:
 *   [0] length  [1] client address (host order)  [2] client port
 *   [3] the local address the query was sent to (host order; IP_PKTINFO's
 *       ipi_spec_dst), 0 if unknown
 *   [4] interface index it came in on, 0 if unknown
 * A socket bound to 0.0.0.0 reports [3] and [4] (IP_PKTINFO) and an answer
 * leaves from [3]: the routing table would otherwise pick the source (the
 * interface's first address), and a client drops an answer from an address
 * it did not ask. A socket bound to one address needs neither: it costs
 * nothing there. */
#define DNS4_META 5

static __thread struct mmsghdr dmsgs[DNS_MAX_BATCH];
static __thread struct iovec diovs[DNS_MAX_BATCH];
static __thread struct sockaddr_in daddrs[DNS_MAX_BATCH];
static __thread char dctrl[DNS_MAX_BATCH][CMSG_SPACE(sizeof(struct in_pktinfo))];

/* Both families: a non-blocking UDP socket with the receive buffer asked
 * for, each option {level, name, wanted} set to 1 when wanted (the PKTINFO
 * a wildcard bind needs; IPV6_V6ONLY), bound to `a`. The socket, or -errno. */
static int open_udp(int family, const struct sockaddr *a, socklen_t alen, int rcvbuf, const int (*opts)[3], int nopts)
{
	int one = 1;
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	for (int i = 0; i < nopts; i++) {
		if (opts[i][2] && setsockopt(fd, opts[i][0], opts[i][1], &one, sizeof(one)) < 0)
			goto fail;
	}
	if (bind(fd, a, alen) < 0)
		goto fail;
	return fd;
fail:;
	int e = errno;

	close(fd);
	return -e;
}

/* Both families: waits up to timeout_ms for a datagram, then points
 * messages [0, max) at their slots, address and control buffers. Returns
 * the batch size to ask recvmmsg for, 0 on timeout, or -errno. */
static int prepare_recv(int fd, int timeout_ms, int max, struct mmsghdr *msgs, struct iovec *iovs, uint8_t *buf, uint32_t slot,
			void *addrs, size_t alen, void *ctrl, size_t clen)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r = poll(&p, 1, timeout_ms);

	if (r <= 0)
		return r < 0 && errno != EINTR ? -errno : 0;
	if (p.revents & POLLNVAL)
		return -EBADF;
	if (max > DNS_MAX_BATCH)
		max = DNS_MAX_BATCH;
	for (int i = 0; i < max; i++) {
		iovs[i].iov_base = buf + (uint32_t)i * slot;
		iovs[i].iov_len = slot;
		memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
		msgs[i].msg_hdr.msg_iov = &iovs[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = (uint8_t *)addrs + (size_t)i * alen;
		msgs[i].msg_hdr.msg_namelen = (socklen_t)alen;
		msgs[i].msg_hdr.msg_control = (uint8_t *)ctrl + (size_t)i * clen;
		msgs[i].msg_hdr.msg_controllen = clen;
	}
	return max;
}

/* Both families: sends messages [0, n); answers the socket cannot take now
 * (a full send buffer) are dropped (a client retries), one bad destination
 * (e.g. unreachable) is skipped. Returns how many were sent. */
static int send_all(int fd, struct mmsghdr *msgs, int n)
{
	int done = 0;

	while (done < n) {
		int r = sendmmsg(fd, msgs + done, (unsigned int)(n - done), MSG_DONTWAIT);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == ENOBUFS)
				return done;
			done++;
			continue;
		}
		done += r;
	}
	return done;
}

/* A UDP socket for queries on ip:port (host order), with IP_PKTINFO when ip
 * is 0.0.0.0. No SO_REUSEADDR: on UDP it would let a second server share
 * the port silently (UDP has no TIME_WAIT, so a restarted agent binds again
 * at once without it). */
int weft_dns_open(uint32_t ip, uint16_t port, int rcvbuf)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(ip) };
	const int opts[1][3] = { { IPPROTO_IP, IP_PKTINFO, ip == 0 } };

	return open_udp(AF_INET, (struct sockaddr *)&a, sizeof(a), rcvbuf, opts, 1);
}

/* Waits up to timeout_ms for a query, then takes up to max of them: message
 * i at buf + i * slot, meta as laid out above. A datagram longer than the
 * slot is cut (its length says so: = slot). Returns n, 0 on timeout, or
 * -errno. */
int weft_dns_recv(int fd, uint8_t *buf, uint32_t slot, int max, int32_t *meta, int timeout_ms)
{
	int r = prepare_recv(fd, timeout_ms, max, dmsgs, diovs, buf, slot, daddrs, sizeof(daddrs[0]), dctrl, sizeof(dctrl[0]));

	if (r <= 0)
		return r;
	r = recvmmsg(fd, dmsgs, (unsigned int)r, MSG_DONTWAIT, NULL);
	if (r < 0)
		return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
	for (int i = 0; i < r; i++) {
		int32_t *m = meta + DNS4_META * i;
		struct msghdr *h = &dmsgs[i].msg_hdr;

		m[0] = (int32_t)dmsgs[i].msg_len;
		m[1] = (int32_t)ntohl(daddrs[i].sin_addr.s_addr);
		m[2] = ntohs(daddrs[i].sin_port);
		m[3] = 0;
		m[4] = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
			if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
			    c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
				struct in_pktinfo pi;

				memcpy(&pi, CMSG_DATA(c), sizeof(pi));
				m[3] = (int32_t)ntohl(pi.ipi_spec_dst.s_addr);
				m[4] = pi.ipi_ifindex;
			}
		}
	}
	return r;
}

/* Sends n answers: message i from buf + i * slot, meta as for receive (the
 * destination, and the source when [3] is set). Answers the socket cannot
 * take now (a full send buffer) are dropped: a client retries. Returns how
 * many were sent, or -errno. */
int weft_dns_send(int fd, const uint8_t *buf, uint32_t slot, int n, const int32_t *meta)
{
	if (n > DNS_MAX_BATCH)
		n = DNS_MAX_BATCH;
	for (int i = 0; i < n; i++) {
		const int32_t *m = meta + DNS4_META * i;
		struct msghdr *h = &dmsgs[i].msg_hdr;

		diovs[i].iov_base = (void *)(buf + (uint32_t)i * slot);
		diovs[i].iov_len = (size_t)m[0];
		daddrs[i].sin_family = AF_INET;
		daddrs[i].sin_addr.s_addr = htonl((uint32_t)m[1]);
		daddrs[i].sin_port = htons((uint16_t)m[2]);
		memset(h, 0, sizeof(*h));
		h->msg_iov = &diovs[i];
		h->msg_iovlen = 1;
		h->msg_name = &daddrs[i];
		h->msg_namelen = sizeof(daddrs[i]);
		if (m[3] != 0) {
			struct in_pktinfo pi = { .ipi_ifindex = 0 };
			struct cmsghdr *c;

			pi.ipi_spec_dst.s_addr = htonl((uint32_t)m[3]);
			h->msg_control = dctrl[i];
			h->msg_controllen = CMSG_SPACE(sizeof(pi));
			c = CMSG_FIRSTHDR(h);
			c->cmsg_level = IPPROTO_IP;
			c->cmsg_type = IP_PKTINFO;
			c->cmsg_len = CMSG_LEN(sizeof(pi));
			memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		}
	}
	return send_all(fd, dmsgs, n);
}

/* ------------------------------------------------------------------ IPv6
 *
 * meta per message (int32), DNS6_META of them:
 *   [0] length  [1] client port  [2] client scope id (link-local clients)
 *   [3..6] client address, four 32-bit words, each in host order (word 0
 *          is bytes 0-3 of the address)
 *   [7] interface index the query came in on (IPV6_PKTINFO), 0 if unknown
 *   [8..11] the local address the query was sent to (IPV6_PKTINFO), zero
 *          if unknown
 * An answer leaves from the address its query was sent to: a socket bound
 * to :: would otherwise let the routing table pick the source, and a
 * client drops an answer from an address it did not ask (a socket bound to
 * one address gets no IPV6_PKTINFO: [7..11] stay 0). The interface is not
 * forced (the route decides; a link-local client's scope id does). */
#define DNS6_META 12

static __thread struct mmsghdr d6msgs[DNS_MAX_BATCH];
static __thread struct iovec d6iovs[DNS_MAX_BATCH];
static __thread struct sockaddr_in6 d6addrs[DNS_MAX_BATCH];
static __thread char d6ctrl[DNS_MAX_BATCH][CMSG_SPACE(sizeof(struct in6_pktinfo))];

static void words_from(const struct in6_addr *a, int32_t *w)
{
	for (int k = 0; k < 4; k++) {
		uint32_t v;

		memcpy(&v, a->s6_addr + 4 * k, 4);
		w[k] = (int32_t)ntohl(v);
	}
}

static void words_to(const int32_t *w, struct in6_addr *a)
{
	for (int k = 0; k < 4; k++) {
		uint32_t v = htonl((uint32_t)w[k]);

		memcpy(a->s6_addr + 4 * k, &v, 4);
	}
}

/* A UDP socket for queries on [ip16]:port, IPv6 only (IPV6_V6ONLY: an
 * IPv4 listen address is a socket of its own, so 0.0.0.0 and :: can both
 * be had on one port), with the destination of each query reported
 * (IPV6_RECVPKTINFO) when bound to ::. No SO_REUSEADDR, as for IPv4. */
int weft_dns_open6(const uint8_t *ip16, uint16_t port, int rcvbuf)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };

	memcpy(a.sin6_addr.s6_addr, ip16, 16);
	const int opts[2][3] = { { IPPROTO_IPV6, IPV6_V6ONLY, 1 }, { IPPROTO_IPV6, IPV6_RECVPKTINFO, IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr) } };

	return open_udp(AF_INET6, (struct sockaddr *)&a, sizeof(a), rcvbuf, opts, 2);
}

/* As weft_dns_recv, for an IPv6 socket: meta as laid out above. */
int weft_dns_recv6(int fd, uint8_t *buf, uint32_t slot, int max, int32_t *meta, int timeout_ms)
{
	int r = prepare_recv(fd, timeout_ms, max, d6msgs, d6iovs, buf, slot, d6addrs, sizeof(d6addrs[0]), d6ctrl, sizeof(d6ctrl[0]));

	if (r <= 0)
		return r;
	r = recvmmsg(fd, d6msgs, (unsigned int)r, MSG_DONTWAIT, NULL);
	if (r < 0)
		return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
	for (int i = 0; i < r; i++) {
		int32_t *m = meta + DNS6_META * i;
		struct msghdr *h = &d6msgs[i].msg_hdr;

		memset(m, 0, DNS6_META * sizeof(int32_t));
		m[0] = (int32_t)d6msgs[i].msg_len;
		m[1] = ntohs(d6addrs[i].sin6_port);
		m[2] = (int32_t)d6addrs[i].sin6_scope_id;
		words_from(&d6addrs[i].sin6_addr, m + 3);
		for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
			if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
			    c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
				struct in6_pktinfo pi;

				memcpy(&pi, CMSG_DATA(c), sizeof(pi));
				m[7] = (int32_t)pi.ipi6_ifindex;
				words_from(&pi.ipi6_addr, m + 8);
			}
		}
	}
	return r;
}

/* As weft_dns_send, for an IPv6 socket: meta as laid out above (the
 * destination, and the source the answer must leave from when known). */
int weft_dns_send6(int fd, const uint8_t *buf, uint32_t slot, int n, const int32_t *meta)
{
	if (n > DNS_MAX_BATCH)
		n = DNS_MAX_BATCH;
	for (int i = 0; i < n; i++) {
		const int32_t *m = meta + DNS6_META * i;
		struct msghdr *h = &d6msgs[i].msg_hdr;

		d6iovs[i].iov_base = (void *)(buf + (uint32_t)i * slot);
		d6iovs[i].iov_len = (size_t)m[0];
		memset(&d6addrs[i], 0, sizeof(d6addrs[i]));
		d6addrs[i].sin6_family = AF_INET6;
		d6addrs[i].sin6_port = htons((uint16_t)m[1]);
		d6addrs[i].sin6_scope_id = (uint32_t)m[2];
		words_to(m + 3, &d6addrs[i].sin6_addr);
		memset(h, 0, sizeof(*h));
		h->msg_iov = &d6iovs[i];
		h->msg_iovlen = 1;
		h->msg_name = &d6addrs[i];
		h->msg_namelen = sizeof(d6addrs[i]);
		if (m[8] | m[9] | m[10] | m[11]) {
			struct in6_pktinfo pi = { .ipi6_ifindex = 0 };
			struct cmsghdr *c;

			words_to(m + 8, &pi.ipi6_addr);
			h->msg_control = d6ctrl[i];
			h->msg_controllen = CMSG_SPACE(sizeof(pi));
			c = CMSG_FIRSTHDR(h);
			c->cmsg_level = IPPROTO_IPV6;
			c->cmsg_type = IPV6_PKTINFO;
			c->cmsg_len = CMSG_LEN(sizeof(pi));
			memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		}
	}
	return send_all(fd, d6msgs, n);
}

/* The port a DNS socket of either family is bound to (host order), or -errno. */
int weft_dns_port(int fd)
{
	struct sockaddr_storage a;
	socklen_t l = sizeof(a);

	if (getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		return -errno;
	if (a.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
	return ntohs(((struct sockaddr_in *)&a)->sin_port);
}
