/* weft's native shim for the userspace (TUN) data path.
 *
 * Batch system calls over packets that live in a WASM core's linear memory:
 * `base` is that memory, offsets index into it, descriptors follow
 * asm/abi.ts (native/abi.h). JavaScript calls each function once per batch
 * (through koffi), never once per packet. Functions return a count, or a
 * negative errno. Scratch arrays are thread-local: the transmit and receive
 * workers call in parallel.
 *
 * Nothing read from that memory is trusted: every call gets the memory's
 * size, and every table offset, count, iovec offset and length is checked
 * against it (and against the tables' capacity) in 64-bit arithmetic before
 * anything is dereferenced or handed to the kernel; what does not fit is
 * refused with -EINVAL (a whole call) or skipped (one unit), and counted
 * (WEFT_ST_REFUSED). Sends under backpressure (EAGAIN, ENOBUFS) wait a
 * bounded number of times within a per-call budget, then give the unit up
 * and count it (WEFT_ST_DROPPED): a full buffer or a stuck device never
 * holds a worker for long.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "abi.h"

#define MAX_BATCH 256

/* This thread's counters (WEFT_ST_*), taken and reset by weft_shim_stats(). */
static __thread int32_t stats[WEFT_ST_COUNT];

/* True when [off, off + len) lies inside a memory of `size` bytes (no 32-bit wrap-around). */
static inline int in_mem(uint64_t off, uint64_t len, uint32_t size)
{
	return off <= size && len <= (uint64_t)size - off;
}

static inline int refuse(void)
{
	stats[WEFT_ST_REFUSED]++;
	return -EINVAL;
}

/* Checks a receive call's tables: `max` descriptors at desc, `max` slots of
 * slot_size bytes from slot0 of which `room` are filled, all inside memory. */
static int check_rx(uint32_t size, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max)
{
	if (max < 0 || max > MAX_BATCH || room > slot_size)
		return refuse();
	if (max == 0)
		return 0;
	if (!in_mem(desc, (uint64_t)max * WEFT_DESC_SIZE, size) || !in_mem(slot0, (uint64_t)(max - 1) * slot_size + room, size))
		return refuse();
	return 0;
}

static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline int32_t rdi32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

/* Opens (or re-attaches to) the persistent TUN device `name`: IFF_TUN |
 * IFF_NO_PI | IFF_VNET_HDR, non-blocking, with checksum, TSO4 and (where
 * the kernel has it) USO4 offloads: every packet comes and goes behind a
 * 10-byte virtio_net_hdr and may be a 64 KiB super-packet. Persistent, so
 * its addresses and routes stay while the agent restarts. Returns the fd or
 * -errno; *offloads gets the TUN_F_* flags in force. */
int weft_tun_open(const char *name, int32_t *offloads)
{
	struct ifreq ifr;
	int hdr = WEFT_VNET_HLEN;
	/* USO is all or nothing: the kernel takes USO4 only together with USO6
	 * (no IPv6 reaches this device, so the IPv6 half never applies). */
	unsigned int want = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_USO4 | TUN_F_USO6;
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0)
		goto fail;
	if (ioctl(fd, TUNSETOFFLOAD, want) < 0) {
		want &= ~(TUN_F_USO4 | TUN_F_USO6); /* kernels before 6.2 */
		if (ioctl(fd, TUNSETOFFLOAD, want) < 0)
			goto fail;
	}
	*offloads = (int32_t)want;
	return fd;
fail: {
	int e = errno;
	close(fd);
	return -e;
}
}

/* Removes the persistent flag (the device goes when the last fd closes). */
int weft_tun_unpersist(int fd)
{
	return ioctl(fd, TUNSETPERSIST, 0) < 0 ? -errno : 0;
}

static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r = poll(&p, 1, timeout_ms);

	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	return r;
}

/* Reads up to `max` packets from the TUN device into consecutive slots
 * (slot i at base + slot0 + i * slot_size, `room` bytes each) and fills
 * descriptors [0, n) with their offset and length. Waits up to timeout_ms
 * for the first packet. Returns n (0 on timeout) or -errno (-EINVAL: the
 * descriptors or slots do not lie in memory, max is outside 0..256 or room
 * exceeds a slot). */
int weft_tun_read_batch(int fd, uint8_t *base, uint32_t size, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms)
{
	int n = 0, r = check_rx(size, desc, slot0, slot_size, room, max);

	if (r < 0 || max == 0)
		return r;
	r = wait_readable(fd, timeout_ms);
	if (r <= 0)
		return r;
	while (n < max) {
		uint32_t off = slot0 + (uint32_t)n * slot_size;
		ssize_t len = read(fd, base + off, room);
		uint8_t *d = base + desc + (uint32_t)n * WEFT_DESC_SIZE;

		if (len < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return n > 0 ? n : -errno;
		}
		wr32(d + WEFT_DESC_OFF, off);
		wr32(d + WEFT_DESC_LEN, (uint32_t)len);
		n++;
	}
	return n;
}

/* A UDP socket bound to bind_ip:port (host order; port 0 = any), with the
 * given buffer sizes (forced where allowed), the received TOS reported, and
 * (gro) equal datagrams of a flow coalesced into one receive (UDP_GRO).
 * Outer checksums stay on: the kernel refuses UDP_SEGMENT on a socket with
 * SO_NO_CHECK, and computes them with offload anyway. */
int weft_udp_open(uint32_t bind_ip, uint16_t port, int rcvbuf, int sndbuf, int gro)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(bind_ip) };
	int one = 1, fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &one, sizeof(one));
	if (gro)
		setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one)); /* best effort: without it, one datagram per receive */
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* Is UDP_GRO on for this socket (1), off (0), or -errno. */
int weft_udp_gro(int fd)
{
	int v = 0;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, IPPROTO_UDP, UDP_GRO, &v, &l) < 0)
		return -errno;
	return v != 0;
}

/* The port a socket is bound to (host order), or -errno. */
int weft_udp_port(int fd)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);

	if (getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		return -errno;
	return ntohs(a.sin_port);
}

#define MAX_UNITS 2048
#define MAX_IOVS (2 * MAX_UNITS)

static __thread struct mmsghdr msgs[MAX_UNITS];
static __thread struct iovec iovs[MAX_IOVS];
static __thread struct sockaddr_in addrs[MAX_UNITS];
/* Room for IP_TOS and UDP_GRO (receive) or UDP_SEGMENT (send). */
static __thread char ctrl[MAX_UNITS][CMSG_SPACE(sizeof(int)) * 2];

/* Receives up to `max` datagrams into consecutive slots and fills
 * descriptors [0, n): offset, length, source address (host order), TOS and,
 * when UDP_GRO coalesced equal datagrams into one buffer, their size
 * (DESC_GSO; 0 for one datagram). Waits up to timeout_ms for the first.
 * Returns n or -errno (-EINVAL as weft_tun_read_batch). */
int weft_udp_recv_batch(int fd, uint8_t *base, uint32_t size, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms)
{
	int r = check_rx(size, desc, slot0, slot_size, room, max);

	if (r < 0 || max == 0)
		return r;
	r = wait_readable(fd, timeout_ms);
	if (r <= 0)
		return r;
	for (int i = 0; i < max; i++) {
		iovs[i].iov_base = base + slot0 + (uint32_t)i * slot_size;
		iovs[i].iov_len = room;
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].msg_hdr.msg_iov = &iovs[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &addrs[i];
		msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
		msgs[i].msg_hdr.msg_control = ctrl[i];
		msgs[i].msg_hdr.msg_controllen = sizeof(ctrl[i]);
	}
	r = recvmmsg(fd, msgs, (unsigned int)max, MSG_DONTWAIT, NULL);
	if (r < 0)
		return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
	for (int i = 0; i < r; i++) {
		uint8_t *d = base + desc + (uint32_t)i * WEFT_DESC_SIZE;
		uint8_t tos = 0;
		int gso = 0;

		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
			if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS)
				tos = *(uint8_t *)CMSG_DATA(c);
			else if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO)
				memcpy(&gso, CMSG_DATA(c), sizeof(gso));
		}
		wr16(d + WEFT_DESC_GSO, (uint16_t)gso);
		wr32(d + WEFT_DESC_OFF, slot0 + (uint32_t)i * slot_size);
		wr32(d + WEFT_DESC_LEN, msgs[i].msg_len);
		wr32(d + WEFT_DESC_ADDR, ntohl(addrs[i].sin_addr.s_addr));
		d[WEFT_DESC_TOS] = tos;
	}
	return r;
}


/* Copies up to n counters (WEFT_ST_* order) to out and resets them; returns how many. */
int weft_shim_stats(int32_t *out, int n)
{
	if (n < 0)
		return -EINVAL;
	if (n > WEFT_ST_COUNT)
		n = WEFT_ST_COUNT;
	memcpy(out, stats, (size_t)n * sizeof(int32_t));
	memset(stats, 0, sizeof(stats));
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
	stats[WEFT_ST_REFUSED]++;
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
			stats[WEFT_ST_LAST_ERRNO] = e;
			if (tries < SEND_RETRIES && now < *deadline) {
				/* EAGAIN: wait until the socket has room; ENOBUFS (memory, a full queue): back off a little. */
				struct pollfd p = { .fd = fd, .events = POLLOUT };
				int wait = (int)(*deadline - now < SEND_WAIT_MS ? *deadline - now : SEND_WAIT_MS);

				tries++;
				stats[WEFT_ST_RETRIES]++;
				if (e == ENOBUFS)
					poll(NULL, 0, 1);
				else
					poll(&p, 1, wait);
				continue;
			}
			/* Give up the message in front; past the budget, everything left on this socket. */
			int drop = now >= *deadline ? m - done : 1;

			stats[WEFT_ST_DROPPED] += drop;
			done += drop;
			tries = 0;
			continue;
		}
		stats[WEFT_ST_SEND_ERRORS]++;
		stats[WEFT_ST_LAST_ERRNO] = r < 0 ? errno : 0;
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
int weft_udp_send_units(const int32_t *fds, int nfds, uint8_t *base, uint32_t size, uint32_t units, uint32_t iovtab, uint32_t iov_cap, int n)
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
			if (rd32(u + WEFT_UNIT_NIOV) > (uint32_t)(MAX_IOVS - used) && rd32(u + WEFT_UNIT_NIOV) <= MAX_IOVS) {
				sent += send_all(fds[s], m, &deadline); /* scratch full: send what is collected */
				m = 0;
				used = 0;
			}
			k = unit_iovs(base, size, iovtab, iov_cap, u, iovs + used, MAX_IOVS - used);
			if (k < 0)
				continue;
			addrs[m].sin_family = AF_INET;
			addrs[m].sin_port = htons(rd16(u + WEFT_UNIT_DPORT));
			addrs[m].sin_addr.s_addr = htonl(rd32(u + WEFT_UNIT_ADDR));
			memset(&msgs[m], 0, sizeof(msgs[m]));
			msgs[m].msg_hdr.msg_iov = iovs + used;
			msgs[m].msg_hdr.msg_iovlen = (size_t)k;
			msgs[m].msg_hdr.msg_name = &addrs[m];
			msgs[m].msg_hdr.msg_namelen = sizeof(addrs[m]);
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
			stats[WEFT_ST_SEND_ERRORS]++;
			stats[WEFT_ST_LAST_ERRNO] = errno;
		}
	}
	return written;
}

int weft_close(int fd)
{
	return close(fd) < 0 ? -errno : 0;
}
