/* weft's native shim for the userspace (TUN) data path.
 *
 * Batch system calls over packets that live in a WASM core's linear memory:
 * `base` is that memory, offsets index into it, descriptors follow
 * asm/abi.ts (native/abi.h). JavaScript calls each function once per batch
 * (through koffi), never once per packet. Functions return a count, or a
 * negative errno. Scratch arrays are thread-local: the transmit and receive
 * workers call in parallel.
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
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "abi.h"

#define MAX_BATCH 256

static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline int32_t rdi32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

/* Opens (or re-attaches to) the persistent TUN device `name`: IFF_TUN |
 * IFF_NO_PI, non-blocking. Persistent, so its addresses and routes stay
 * while the agent restarts. Returns the fd or -errno. */
int weft_tun_open(const char *name)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
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
 * for the first packet. Returns n (0 on timeout) or -errno. */
int weft_tun_read_batch(int fd, uint8_t *base, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms)
{
	int n = 0, r = wait_readable(fd, timeout_ms);

	if (r <= 0)
		return r;
	if (max > MAX_BATCH)
		max = MAX_BATCH;
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

/* Writes every packet whose descriptor result is >= 0 to the TUN device.
 * Returns how many were written. */
int weft_tun_write_batch(int fd, uint8_t *base, uint32_t desc, int n)
{
	int written = 0;

	for (int i = 0; i < n; i++) {
		const uint8_t *d = base + desc + (uint32_t)i * WEFT_DESC_SIZE;

		if (rdi32(d + WEFT_DESC_RES) < 0)
			continue;
		if (write(fd, base + rd32(d + WEFT_DESC_OFF), rd32(d + WEFT_DESC_LEN)) >= 0)
			written++;
	}
	return written;
}

/* A UDP socket bound to bind_ip:port (host order; port 0 = any), with the
 * given buffer sizes (forced where allowed), zero outer checksums on send
 * (as Linux vxlan sends by default) and the received TOS reported. */
int weft_udp_open(uint32_t bind_ip, uint16_t port, int rcvbuf, int sndbuf)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(bind_ip) };
	int one = 1, fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof(one));
	setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
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

static __thread struct mmsghdr msgs[MAX_BATCH];
static __thread struct iovec iovs[MAX_BATCH];
static __thread struct sockaddr_in addrs[MAX_BATCH];
static __thread char ctrl[MAX_BATCH][CMSG_SPACE(sizeof(int))];

/* Receives up to `max` datagrams into consecutive slots and fills
 * descriptors [0, n): offset, length, source address (host order), TOS.
 * Waits up to timeout_ms for the first. Returns n or -errno. */
int weft_udp_recv_batch(int fd, uint8_t *base, uint32_t desc, uint32_t slot0, uint32_t slot_size, uint32_t room, int max, int timeout_ms)
{
	int r = wait_readable(fd, timeout_ms);

	if (r <= 0)
		return r;
	if (max > MAX_BATCH)
		max = MAX_BATCH;
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

		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
			if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS)
				tos = *(uint8_t *)CMSG_DATA(c);
		}
		wr32(d + WEFT_DESC_OFF, slot0 + (uint32_t)i * slot_size);
		wr32(d + WEFT_DESC_LEN, msgs[i].msg_len);
		wr32(d + WEFT_DESC_ADDR, ntohl(addrs[i].sin_addr.s_addr));
		d[WEFT_DESC_TOS] = tos;
	}
	return r;
}

/* Sends every descriptor with result >= 0 to addr:dport. The source port
 * comes from the socket: descriptor i goes out of fds[sport % nfds], so
 * flows spread over the sockets' ports by their flow hash (WASM computed
 * sport). One sendmmsg per socket. Returns how many were sent. */
int weft_udp_send_batch(const int32_t *fds, int nfds, uint8_t *base, uint32_t desc, int n)
{
	int sent = 0;

	if (n > MAX_BATCH)
		n = MAX_BATCH;
	for (int s = 0; s < nfds; s++) {
		int m = 0;

		for (int i = 0; i < n; i++) {
			const uint8_t *d = base + desc + (uint32_t)i * WEFT_DESC_SIZE;

			if (rdi32(d + WEFT_DESC_RES) < 0 || rd16(d + WEFT_DESC_SPORT) % nfds != s)
				continue;
			iovs[m].iov_base = base + rd32(d + WEFT_DESC_OFF);
			iovs[m].iov_len = rd32(d + WEFT_DESC_LEN);
			addrs[m].sin_family = AF_INET;
			addrs[m].sin_port = htons(rd16(d + WEFT_DESC_DPORT));
			addrs[m].sin_addr.s_addr = htonl(rd32(d + WEFT_DESC_ADDR));
			memset(&msgs[m], 0, sizeof(msgs[m]));
			msgs[m].msg_hdr.msg_iov = &iovs[m];
			msgs[m].msg_hdr.msg_iovlen = 1;
			msgs[m].msg_hdr.msg_name = &addrs[m];
			msgs[m].msg_hdr.msg_namelen = sizeof(addrs[m]);
			m++;
		}
		for (int done = 0; done < m;) {
			int r = sendmmsg(fds[s], msgs + done, (unsigned int)(m - done), 0);

			if (r <= 0) {
				if (r < 0 && errno == EAGAIN) {
					struct pollfd p = { .fd = fds[s], .events = POLLOUT };
					poll(&p, 1, 10);
					continue;
				}
				break; /* a hard error: the rest of this socket's batch is dropped */
			}
			done += r;
			sent += r;
		}
	}
	return sent;
}

int weft_close(int fd)
{
	return close(fd) < 0 ? -errno : 0;
}
