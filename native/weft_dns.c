/* weft's native batch I/O for the node-local DNS server's UDP hot path.
 *
 * One call receives a batch of queries (recvmmsg) and one call sends a batch
 * of answers (sendmmsg), so a JavaScript handler pays two crossings per
 * batch instead of a libuv read and a send per packet. Buffers are Node
 * Buffers of fixed-size slots; meta holds three int32 per message: length,
 * IPv4 address and port (host order). Functions return a count or -errno.
 * Both run on the main thread: the poll addon (weft_poll.c) says when the
 * socket is readable, and the receive call then takes what is queued with
 * timeout_ms 0 (it never blocks); the send call is non-blocking. Their
 * scratch arrays are thread-local.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define DNS_MAX_BATCH 256

static __thread struct mmsghdr dmsgs[DNS_MAX_BATCH];
static __thread struct iovec diovs[DNS_MAX_BATCH];
static __thread struct sockaddr_in daddrs[DNS_MAX_BATCH];

/* A UDP socket for queries on ip:port (host order). No SO_REUSEADDR: on UDP
 * it would let a second server share the port silently (UDP has no
 * TIME_WAIT, so a restarted agent binds again at once without it). */
int weft_dns_open(uint32_t ip, uint16_t port, int rcvbuf)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(ip) };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* Waits up to timeout_ms for a query, then takes up to max of them: message
 * i at buf + i * slot, meta[3i..3i+2] = length, source address, source port.
 * A datagram longer than the slot is cut (its length says so: = slot).
 * Returns n, 0 on timeout, or -errno. */
int weft_dns_recv(int fd, uint8_t *buf, uint32_t slot, int max, int32_t *meta, int timeout_ms)
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
		diovs[i].iov_base = buf + (uint32_t)i * slot;
		diovs[i].iov_len = slot;
		memset(&dmsgs[i].msg_hdr, 0, sizeof(dmsgs[i].msg_hdr));
		dmsgs[i].msg_hdr.msg_iov = &diovs[i];
		dmsgs[i].msg_hdr.msg_iovlen = 1;
		dmsgs[i].msg_hdr.msg_name = &daddrs[i];
		dmsgs[i].msg_hdr.msg_namelen = sizeof(daddrs[i]);
	}
	r = recvmmsg(fd, dmsgs, (unsigned int)max, MSG_DONTWAIT, NULL);
	if (r < 0)
		return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
	for (int i = 0; i < r; i++) {
		meta[3 * i] = (int32_t)dmsgs[i].msg_len;
		meta[3 * i + 1] = (int32_t)ntohl(daddrs[i].sin_addr.s_addr);
		meta[3 * i + 2] = ntohs(daddrs[i].sin_port);
	}
	return r;
}

/* Sends n answers: message i from buf + i * slot, meta as for receive (the
 * destination). Answers the socket cannot take now (a full send buffer) are
 * dropped: a client retries. Returns how many were sent, or -errno. */
int weft_dns_send(int fd, const uint8_t *buf, uint32_t slot, int n, const int32_t *meta)
{
	int done = 0;

	if (n > DNS_MAX_BATCH)
		n = DNS_MAX_BATCH;
	for (int i = 0; i < n; i++) {
		diovs[i].iov_base = (void *)(buf + (uint32_t)i * slot);
		diovs[i].iov_len = (size_t)meta[3 * i];
		daddrs[i].sin_family = AF_INET;
		daddrs[i].sin_addr.s_addr = htonl((uint32_t)meta[3 * i + 1]);
		daddrs[i].sin_port = htons((uint16_t)meta[3 * i + 2]);
		memset(&dmsgs[i].msg_hdr, 0, sizeof(dmsgs[i].msg_hdr));
		dmsgs[i].msg_hdr.msg_iov = &diovs[i];
		dmsgs[i].msg_hdr.msg_iovlen = 1;
		dmsgs[i].msg_hdr.msg_name = &daddrs[i];
		dmsgs[i].msg_hdr.msg_namelen = sizeof(daddrs[i]);
	}
	while (done < n) {
		int r = sendmmsg(fd, dmsgs + done, (unsigned int)(n - done), MSG_DONTWAIT);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == ENOBUFS)
				return done;
			/* One bad destination (e.g. unreachable): skip it, send the rest. */
			done++;
			continue;
		}
		done += r;
	}
	return done;
}
