/* weft's native shim, send side: units (asm/abi.ts) that the WASM core
 * built in its linear memory go out as UDP messages (sendmmsg, UDP_SEGMENT)
 * or TUN writes (writev).
 *
 * The unit and iovec tables come from WASM memory and are not trusted: the
 * tables must lie inside the memory (whose size every call gets), each
 * unit's iovec entries inside the table's capacity, each iovec inside the
 * memory, all in 64-bit arithmetic; a bad table refuses the call (-EINVAL),
 * a bad unit is skipped, both counted (WEFT_ST_REFUSED). Backpressure
 * (EAGAIN, ENOBUFS) gets a bounded number of waits within a per-call budget,
 * then the unit is given up and counted (WEFT_ST_DROPPED): a full socket
 * buffer or a stalled device never holds a worker for long.
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "shim.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define MAX_UNITS WEFT_MAX_UNITS
#define MAX_IOVS (2 * MAX_UNITS)

__thread int32_t weft_stats[WEFT_ST_COUNT];

static __thread struct mmsghdr msgs[MAX_UNITS];
static __thread struct iovec iovs[MAX_IOVS];
static __thread union {
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
} addrs[MAX_UNITS];
static __thread char ctrl[MAX_UNITS][CMSG_SPACE(sizeof(uint16_t))];

/* Copies up to n counters (WEFT_ST_* order) to out and resets them; returns how many. */
int weft_shim_stats(int32_t *out, int n)
{
	if (n < 0)
		return -EINVAL;
	if (n > WEFT_ST_COUNT)
		n = WEFT_ST_COUNT;
	memcpy(out, weft_stats, (size_t)n * sizeof(int32_t));
	memset(weft_stats, 0, sizeof(weft_stats));
	return n;
}

/* Checks the unit table ([units, +n units)) and the iovec table ([iovtab, +iov_cap entries)). */
static int check_units(uint32_t size, uint32_t units, uint32_t iovtab, uint32_t iov_cap, int n)
{
	if (n < 0 || n > MAX_UNITS || !in_mem(units, (uint64_t)n * WEFT_UNIT_SIZE, size) || !in_mem(iovtab, (uint64_t)iov_cap * WEFT_IOV_SIZE, size))
		return refuse();
	return 0;
}

/* Fills out[0, k) from a unit's entries of the iovec table and returns k,
 * or -1 (counted) when an entry lies outside the table or an iovec outside
 * memory, the unit has none, or more than `room`. */
static int unit_iovs(const uint8_t *base, uint32_t size, uint32_t iovtab, uint32_t iov_cap, const uint8_t *u, struct iovec *out, int room)
{
	uint64_t first = rd32(u + WEFT_UNIT_IOV), n = rd32(u + WEFT_UNIT_NIOV);

	if (n == 0 || n > (uint64_t)room || first + n > iov_cap)
		goto bad;
	for (uint64_t k = 0; k < n; k++) {
		const uint8_t *e = base + iovtab + (first + k) * WEFT_IOV_SIZE;
		uint32_t off = rd32(e), len = rd32(e + 4);

		if (!in_mem(off, len, size))
			goto bad;
		out[k].iov_base = (uint8_t *)base + off;
		out[k].iov_len = len;
	}
	return (int)n;
bad:
	weft_stats[WEFT_ST_REFUSED]++;
	return -1;
}

/* Backpressure bounds of one weft_udp_send_units call. */
#define SEND_RETRIES 4 /* tries without progress before the message in front is given up */
#define SEND_WAIT_MS 5 /* longest wait for room per try */
#define SEND_BUDGET_MS 50 /* after this much waiting in a call, what does not go at once is dropped */

static int64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Sends msgs[0, m) on fd: one sendmmsg per run, bounded waits when the
 * socket or the device pushes back. Returns how many were sent. */
static int send_all(int fd, int m, int64_t *deadline)
{
	int sent = 0, tries = 0;

	for (int done = 0; done < m;) {
		int r = sendmmsg(fd, msgs + done, (unsigned int)(m - done), 0);

		if (r > 0) {
			done += r;
			sent += r;
			tries = 0;
			continue;
		}
		if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
			int e = errno;
			int64_t now = now_ms();

			if (*deadline == 0)
				*deadline = now + SEND_BUDGET_MS;
			weft_stats[WEFT_ST_LAST_ERRNO] = e;
			if (tries < SEND_RETRIES && now < *deadline) {
				/* EAGAIN: wait until the socket has room; ENOBUFS (memory, a full queue): back off a little. */
				struct pollfd p = { .fd = fd, .events = POLLOUT };
				int wait = (int)(*deadline - now < SEND_WAIT_MS ? *deadline - now : SEND_WAIT_MS);

				tries++;
				weft_stats[WEFT_ST_RETRIES]++;
				if (e == ENOBUFS)
					poll(NULL, 0, 1);
				else
					poll(&p, 1, wait);
				continue;
			}
			/* Give up the message in front; past the budget, everything left on this socket. */
			int drop = now >= *deadline ? m - done : 1;

			weft_stats[WEFT_ST_DROPPED] += drop;
			done += drop;
			tries = 0;
			continue;
		}
		weft_stats[WEFT_ST_SEND_ERRORS]++;
		weft_stats[WEFT_ST_LAST_ERRNO] = r < 0 ? errno : 0;
		done++; /* skip the message the kernel refused (e.g. EMSGSIZE) and go on */
	}
	return sent;
}

/* Sends units [0, n) (those with a result >= 0): each is one message whose
 * iovecs the kernel splits into datagrams of UNIT_GSO bytes (UDP_SEGMENT)
 * when that is not 0. A unit goes out of fds[sport % nfds], so flows spread
 * over the sockets' source ports; one sendmmsg per socket (more when the
 * scratch tables fill). The unit table holds n units at `units`, the iovec
 * table iov_cap entries at `iovtab`. Returns how many units were sent, or
 * -EINVAL (nfds outside 1..64, n outside 0..MAX_UNITS, a table outside
 * memory). */
static int send_units(const int32_t *fds, int nfds, uint8_t *base, uint32_t size, uint32_t units, uint32_t iovtab, uint32_t iov_cap, int n, int v6);

int weft_udp_send_units(const int32_t *fds, int nfds, uint8_t *base, uint32_t size, uint32_t units, uint32_t iovtab, uint32_t iov_cap, int n)
{
	return send_units(fds, nfds, base, size, units, iovtab, iov_cap, n, 0);
}

/* weft_udp_send_units() over IPv6 sockets, for the units whose UNIT_FAMILY
 * is 6 (weft_udp_send_units sends the others): a unit's UNIT_ADDR is the offset
 * of the peer's 16-byte IPv6 address (wire order) in memory (asm/tun-tx.ts
 * with CFG_OUTER6); a unit whose address lies outside memory is refused and
 * counted, never sent. */
int weft_udp_send_units6(const int32_t *fds, int nfds, uint8_t *base, uint32_t size, uint32_t units, uint32_t iovtab, uint32_t iov_cap, int n)
{
	return send_units(fds, nfds, base, size, units, iovtab, iov_cap, n, 1);
}

static int send_units(const int32_t *fds, int nfds, uint8_t *base, uint32_t size, uint32_t units, uint32_t iovtab, uint32_t iov_cap, int n, int v6)
{
	int sent = 0;
	int64_t deadline = 0;

	if (nfds < 1 || nfds > 64)
		return refuse();
	if (check_units(size, units, iovtab, iov_cap, n) < 0)
		return -EINVAL;
	for (int s = 0; s < nfds; s++) {
		int m = 0, used = 0;

		for (int i = 0; i < n; i++) {
			const uint8_t *u = base + units + (uint32_t)i * WEFT_UNIT_SIZE;
			uint16_t gso = rd16(u + WEFT_UNIT_GSO);
			int k;

			if (rdi32(u + WEFT_UNIT_RES) < 0 || rd16(u + WEFT_UNIT_SPORT) % nfds != s)
				continue;
			if ((u[WEFT_UNIT_FAMILY] == 6) != (v6 != 0))
				continue; /* the other family's sockets send it (a dual-stack underlay calls both) */
			if (rd32(u + WEFT_UNIT_NIOV) > (uint32_t)(MAX_IOVS - used) && rd32(u + WEFT_UNIT_NIOV) <= MAX_IOVS) {
				sent += send_all(fds[s], m, &deadline); /* scratch full: send what is collected */
				m = 0;
				used = 0;
			}
			if (v6 && !in_mem(rd32(u + WEFT_UNIT_ADDR), 16, size)) {
				refuse();
				continue;
			}
			k = unit_iovs(base, size, iovtab, iov_cap, u, iovs + used, MAX_IOVS - used);
			if (k < 0)
				continue;
			memset(&addrs[m], 0, sizeof(addrs[m]));
			if (v6) {
				addrs[m].v6.sin6_family = AF_INET6;
				addrs[m].v6.sin6_port = htons(rd16(u + WEFT_UNIT_DPORT));
				memcpy(&addrs[m].v6.sin6_addr, base + rd32(u + WEFT_UNIT_ADDR), 16);
			} else {
				addrs[m].v4.sin_family = AF_INET;
				addrs[m].v4.sin_port = htons(rd16(u + WEFT_UNIT_DPORT));
				addrs[m].v4.sin_addr.s_addr = htonl(rd32(u + WEFT_UNIT_ADDR));
			}
			memset(&msgs[m], 0, sizeof(msgs[m]));
			msgs[m].msg_hdr.msg_iov = iovs + used;
			msgs[m].msg_hdr.msg_iovlen = (size_t)k;
			msgs[m].msg_hdr.msg_name = &addrs[m];
			msgs[m].msg_hdr.msg_namelen = v6 ? sizeof(addrs[m].v6) : sizeof(addrs[m].v4);
			if (gso) {
				struct cmsghdr *c;

				msgs[m].msg_hdr.msg_control = ctrl[m];
				msgs[m].msg_hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
				c = CMSG_FIRSTHDR(&msgs[m].msg_hdr);
				c->cmsg_level = IPPROTO_UDP;
				c->cmsg_type = UDP_SEGMENT;
				c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
				memcpy(CMSG_DATA(c), &gso, sizeof(gso));
			}
			used += k;
			m++;
		}
		sent += send_all(fds[s], m, &deadline);
	}
	return sent;
}

/* Writes units [0, n) with a result >= 0 to the TUN device, one writev each
 * ([virtio_net_hdr + packet] possibly followed by more payload). Tables as
 * weft_udp_send_units. Returns how many were written, or -EINVAL. A TUN
 * write does not block or push back: the kernel queues or drops. */
int weft_tun_write_units(int fd, uint8_t *base, uint32_t size, uint32_t units, uint32_t iovtab, uint32_t iov_cap, int n)
{
	int written = 0;

	if (check_units(size, units, iovtab, iov_cap, n) < 0)
		return -EINVAL;
	for (int i = 0; i < n; i++) {
		const uint8_t *u = base + units + (uint32_t)i * WEFT_UNIT_SIZE;
		int k;

		if (rdi32(u + WEFT_UNIT_RES) < 0)
			continue;
		k = unit_iovs(base, size, iovtab, iov_cap, u, iovs, MAX_IOVS);
		if (k < 0)
			continue;
		if (writev(fd, iovs, k) >= 0) {
			written++;
		} else {
			weft_stats[WEFT_ST_SEND_ERRORS]++;
			weft_stats[WEFT_ST_LAST_ERRNO] = errno;
		}
	}
	return written;
}

