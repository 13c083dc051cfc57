/* The descriptor layout of asm/abi.ts, for the native shim.
 * test/tun/shim.test.ts checks these against the TypeScript constants. */
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
#define WEFT_IOV_SIZE 8
#define WEFT_VNET_HLEN 10
