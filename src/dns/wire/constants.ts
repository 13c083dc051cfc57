/** DNS wire constants (RFC 1035, 2308, 2782, 3596, 6891). */

export const TYPE = {
  A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, SRV: 33, OPT: 41,
  IXFR: 251, AXFR: 252, ANY: 255,
} as const;

export const CLASS_IN = 1;

export const RCODE = {
  NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5,
  /** Extended (EDNS) rcode 16: the OPT record's version is not supported. */
  BADVERS: 16,
} as const;

export const RCODE_NAME: Record<number, string> = {
  0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS",
};

/** Header flag bits (second 16-bit word). */
export const FLAG = {
  QR: 0x8000, AA: 0x0400, TC: 0x0200, RD: 0x0100, RA: 0x0080, AD: 0x0020, CD: 0x0010,
} as const;
/** OPCODE mask and shift in the flags word. */
export const OPCODE_MASK = 0x7800;
/** EDNS DO bit in the OPT record's TTL field (low 16 bits of it). */
export const EDNS_DO = 0x8000;

export const HEADER_LEN = 12;
/** Without EDNS a UDP answer may not exceed 512 bytes (RFC 1035). */
export const UDP_CLASSIC = 512;
/** The UDP payload size we advertise and cap at (DNS flag day 2020). */
export const EDNS_UDP_SIZE = 1232;
export const MAX_NAME_WIRE = 255;

export function typeName(t: number): string {
  for (const [k, v] of Object.entries(TYPE)) if (v === t) return k;
  return `TYPE${t}`;
}
