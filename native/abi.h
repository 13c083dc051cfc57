/* The descriptor layout of asm/abi.ts, for the native shim.
 * test/backend/shim.test.ts checks these against the TypeScript constants. */
#pragma once

#define WEFT_DESC_SIZE 32
#define WEFT_DESC_OFF 0
#define WEFT_DESC_LEN 4
#define WEFT_DESC_RES 8
#define WEFT_DESC_ADDR 12
#define WEFT_DESC_SPORT 16
#define WEFT_DESC_DPORT 18
#define WEFT_DESC_TOS 20

#define WEFT_DESC_GSO 16

#define WEFT_UNIT_SIZE 32
#define WEFT_UNIT_IOV 0
#define WEFT_UNIT_NIOV 4
#define WEFT_UNIT_ADDR 8
#define WEFT_UNIT_SPORT 12
#define WEFT_UNIT_DPORT 14
#define WEFT_UNIT_GSO 16
#define WEFT_UNIT_SEGS 18
#define WEFT_UNIT_RES 20
#define WEFT_UNIT_FAMILY 24
#define WEFT_IOV_SIZE 8
#define WEFT_VNET_HLEN 10
/* Units one send or write call takes at most; the tun workers make their cores with this many. */
#define WEFT_MAX_UNITS 2048

/* The shim's per-thread counters (weft_shim_stats), in this order. */
#define WEFT_ST_SEND_ERRORS 0 /* sends / TUN writes the kernel refused (errno other than backpressure) */
#define WEFT_ST_LAST_ERRNO 1 /* the errno of the last failure */
#define WEFT_ST_REFUSED 2 /* units, descriptor tables or slots outside WASM memory or their tables: never touched */
#define WEFT_ST_DROPPED 3 /* units given up under backpressure (EAGAIN / ENOBUFS past the retry bound or time budget) */
#define WEFT_ST_RETRIES 4 /* waits for the socket after EAGAIN / ENOBUFS */
#define WEFT_ST_COUNT 5
