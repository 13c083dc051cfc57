/* weft's native shim for the userspace (TUN) data path: the TUN device and
 * the UDP sockets, and the receive batches (weft_units.c: the send side).
 *
 * Batch system calls over packets that live in a WASM core's linear memory:
 * `base` is that memory, offsets index into it, descriptors follow
 * asm/abi.ts (native/abi.h). JavaScript calls each function once per batch
 * (through koffi), never once per packet. Functions return a count, or a
 * negative errno. Scratch arrays are thread-local: the transmit and receive
 * workers call in parallel.
 *
 * Nothing the caller says about that memory is trusted: every call gets
 * the memory's size, and a receive batch's descriptor table and slots are
 * checked against it (in 64-bit arithmetic, before waiting or receiving);
 * what does not fit refuses the call with -EINVAL, counted
 * (WEFT_ST_REFUSED), and nothing is written.
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
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "abi.h"
#include "shim.h"


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
 * IFF_NO_PI | IFF_VNET_HDR, non-blocking, with checksum, TSO4, TSO6 and
 * (where the kernel has it) USO4/USO6 offloads: every packet comes and goes behind a
 * 10-byte virtio_net_hdr and may be a 64 KiB super-packet. Persistent, so
 * its addresses and routes stay while the agent restarts. Returns the fd or
 * -errno; *offloads gets the TUN_F_* flags in force. */
int weft_tun_open(const char *name, int32_t *offloads)
{
	struct ifreq ifr;
	int hdr = WEFT_VNET_HLEN;
	/* USO is all or nothing: the kernel takes USO4 only together with USO6.
	 * TSO6 and USO6 super-packets are cut by asm/tun-tx.ts as IPv4 ones. */
	unsigned int want = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6;
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

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* Busy polling (weft_shim_set_spin): after a packet, a thread that finds
 * its fd empty looks again, yielding the CPU between looks, for up to
 * spin_us before it sleeps in poll(): the next packet of a request/response
 * exchange usually comes within tens of microseconds, and a sleeping
 * thread's wake-up costs about as much again on each hop. Only while
 * small messages flow: a thread that got nothing for ACTIVE_NS sleeps at
 * once, so an idle agent uses no CPU; and while any worker of this agent
 * carried bulk (a batch of LIGHT_BYTES or more) within ACTIVE_NS, no worker
 * spins: a stream's next super-packet, or the ACKs coming back the other
 * way, are not worth the CPU a spin takes from the pods. */
#define ACTIVE_NS 2000000ull
#define LIGHT_BYTES 16384u
static __thread int spin_us;
static __thread uint64_t last_packet_ns;
/* Process-wide (all workers): when a worker last read a bulk batch. */
static uint64_t last_bulk_ns;

/* Notes a batch of `bytes` read now. */
static void note_batch(uint32_t bytes)
{
	uint64_t now = now_ns();

	last_packet_ns = now;
	if (bytes >= LIGHT_BYTES)
		__atomic_store_n(&last_bulk_ns, now, __ATOMIC_RELAXED);
}

/* Sets this thread's busy-poll budget in microseconds (0: off; at most 1000). */
int weft_shim_set_spin(int us)
{
	if (us < 0 || us > 1000)
		return -EINVAL;
	spin_us = us;
	return 0;
}

/* Waits for fd to become readable: spins first while traffic flows (see
 * above), then sleeps up to timeout_ms. Returns 1, 0 on timeout, or -errno. */
static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r = 0;

	if (spin_us > 0) {
		uint64_t now = now_ns();

		/* last_bulk_ns may be a moment after `now` (another worker wrote it since): compare without subtracting. */
		if (now - last_packet_ns < ACTIVE_NS && __atomic_load_n(&last_bulk_ns, __ATOMIC_RELAXED) + ACTIVE_NS <= now) {
			uint64_t end = now + (uint64_t)spin_us * 1000u;

			do {
				sched_yield();
				r = poll(&p, 1, 0);
			} while (r == 0 && now_ns() < end);
		}
	}
	if (r == 0)
		r = poll(&p, 1, timeout_ms);
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
	/* Reads first: under load the device is seldom empty, and a poll()
	 * before every batch would be a system call for nothing. */
	for (int waited = 0; n < max;) {
		uint32_t off = slot0 + (uint32_t)n * slot_size;
		ssize_t len = read(fd, base + off, room);
		uint8_t *d = base + desc + (uint32_t)n * WEFT_DESC_SIZE;

		if (len < 0) {
			if (errno != EAGAIN && errno != EINTR)
				return n > 0 ? n : -errno;
			if (n > 0 || waited)
				break;
			r = wait_readable(fd, timeout_ms);
			if (r <= 0)
				return r;
			waited = 1;
			continue;
		}
		wr32(d + WEFT_DESC_OFF, off);
		wr32(d + WEFT_DESC_LEN, (uint32_t)len);
		n++;
	}
	if (n > 0) {
		uint32_t bytes = 0;

		for (int i = 0; i < n; i++)
			bytes += rd32(base + desc + (uint32_t)i * WEFT_DESC_SIZE + WEFT_DESC_LEN);
		note_batch(bytes);
	}
	return n;
}

/* A UDP socket bound to bind_ip:port (host order; port 0 = any), with the
 * given buffer sizes (forced where allowed), the received TOS reported, and
 * (gro) equal datagrams of a flow coalesced into one receive (UDP_GRO).
 * Outer checksums stay on: the kernel refuses UDP_SEGMENT on a socket with
 * SO_NO_CHECK, and computes them with offload anyway. */
static void tune(int fd, int rcvbuf, int sndbuf, int gro)
{
	int one = 1;

	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (gro)
		setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one)); /* best effort: without it, one datagram per receive */
}

/* weft_udp_open() for an IPv6 underlay: an AF_INET6 socket (IPv6 only)
 * bound to the 16 bytes at bind_ip (wire order), the received traffic class
 * reported (IPV6_RECVTCLASS). Zero UDP checksums stay refused (the kernel
 * drops them on IPv6 unless told otherwise), so what a receive returns has a
 * verified checksum. */
int weft_udp_open6(const uint8_t *bind_ip, uint16_t port, int rcvbuf, int sndbuf, int gro)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	int one = 1, fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	memcpy(&a.sin6_addr, bind_ip, 16);
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &one, sizeof(one));
	tune(fd, rcvbuf, sndbuf, gro);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int weft_udp_open(uint32_t bind_ip, uint16_t port, int rcvbuf, int sndbuf, int gro)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(bind_ip) };
	int one = 1, fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &one, sizeof(one));
	tune(fd, rcvbuf, sndbuf, gro);
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
	struct sockaddr_in6 a; /* the port sits at the same offset in sockaddr_in */
	socklen_t l = sizeof(a);

	if (getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		return -errno;
	return ntohs(a.sin6_port);
}

static __thread struct mmsghdr msgs[MAX_BATCH];
static __thread struct iovec iovs[MAX_BATCH];
static __thread union {
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
} addrs[MAX_BATCH];
/* Room for IP_TOS and UDP_GRO. */
static __thread char ctrl[MAX_BATCH][CMSG_SPACE(sizeof(int)) * 2];

/* Receives up to `max` datagrams into consecutive slots and fills
 * descriptors [0, n): offset, length, source address (host order), TOS and,
 * when UDP_GRO coalesced equal datagrams into one buffer, their size
 * (DESC_GSO; 0 for one datagram). Waits up to timeout_ms for the first.
 * Returns n or -errno (-EINVAL as weft_tun_read_batch). */
static int recv_batch(int fd, uint8_t *base, uint32_t size, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms, int v6, uint32_t addr6);

int weft_udp_recv_batch(int fd, uint8_t *base, uint32_t size, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms)
{
	return recv_batch(fd, base, size, desc, slot0, slot_size, room, max, timeout_ms, 0, 0);
}

/* weft_udp_recv_batch() on an IPv6 socket: descriptor i's source address
 * goes to the 16 bytes at addr6 + 16 i (wire order; the WASM core's IPv6
 * scratch region, where decap6/tun receive read it), DESC_ADDR is 0, and the
 * traffic class is the TOS. A table outside memory refuses the call. */
int weft_udp_recv_batch6(int fd, uint8_t *base, uint32_t size, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms, uint32_t addr6)
{
	if (max > 0 && !in_mem(addr6, (uint64_t)max * 16, size))
		return refuse();
	return recv_batch(fd, base, size, desc, slot0, slot_size, room, max, timeout_ms, 1, addr6);
}

static int recv_batch(int fd, uint8_t *base, uint32_t size, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms, int v6, uint32_t addr6)
{
	int r = check_rx(size, desc, slot0, slot_size, room, max);

	if (r < 0 || max == 0)
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
	/* Receives first, and waits only when the socket is empty (as the TUN read). */
	r = recvmmsg(fd, msgs, (unsigned int)max, MSG_DONTWAIT, NULL);
	if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
		r = wait_readable(fd, timeout_ms);
		if (r <= 0)
			return r;
		r = recvmmsg(fd, msgs, (unsigned int)max, MSG_DONTWAIT, NULL);
	}
	if (r < 0)
		return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
	if (r > 0) {
		uint32_t bytes = 0;

		for (int i = 0; i < r; i++)
			bytes += msgs[i].msg_len;
		note_batch(bytes);
	}
	for (int i = 0; i < r; i++) {
		uint8_t *d = base + desc + (uint32_t)i * WEFT_DESC_SIZE;
		uint8_t tos = 0;
		int gso = 0;

		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
			if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS)
				tos = *(uint8_t *)CMSG_DATA(c);
			else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
				int tc;

				memcpy(&tc, CMSG_DATA(c), sizeof(tc));
				tos = (uint8_t)tc;
			}
			else if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO)
				memcpy(&gso, CMSG_DATA(c), sizeof(gso));
		}
		wr16(d + WEFT_DESC_GSO, (uint16_t)gso);
		wr32(d + WEFT_DESC_OFF, slot0 + (uint32_t)i * slot_size);
		wr32(d + WEFT_DESC_LEN, msgs[i].msg_len);
		if (v6) {
			wr32(d + WEFT_DESC_ADDR, 0);
			memcpy(base + addr6 + (uint32_t)i * 16, &addrs[i].v6.sin6_addr, 16);
		} else
			wr32(d + WEFT_DESC_ADDR, ntohl(addrs[i].v4.sin_addr.s_addr));
		d[WEFT_DESC_TOS] = tos;
	}
	return r;
}


/* How many datagrams one UDP_SEGMENT send may carry here: the kernel's
 * UDP_MAX_SEGMENTS, 128 on newer kernels and 64 before. Asked by sending
 * 128 one-byte segments from a throwaway socket to our own address (bind_ip,
 * host order) on the discard port: the kernel refuses more than its limit
 * with EINVAL before anything is sent; otherwise the datagrams are
 * delivered locally and dropped. Returns 128, 64, or -errno (no GSO). */
int weft_udp_gso_max_segs(uint32_t bind_ip)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(bind_ip) };
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(bind_ip) };
	static const char bytes[128];
	int one = 1, r = -EINVAL, fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &one, sizeof(one)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	for (int segs = 128; segs >= 64; segs /= 2) {
		ssize_t n = sendto(fd, bytes, (size_t)segs, 0, (struct sockaddr *)&to, sizeof(to));

		if (n == segs) {
			r = segs;
			break;
		}
		r = n < 0 ? -errno : -EIO;
	}
	close(fd);
	return r;
}

int weft_close(int fd)
{
	return close(fd) < 0 ? -errno : 0;
}
