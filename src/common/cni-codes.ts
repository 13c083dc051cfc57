// The CNI error codes (the spec's, and weft's own from 100), below every layer
// that reports one: IPAM errors carry the code a plugin prints for them.

/**
 * Well-known error codes (0-99 are the spec's), then weft's own (100+, which
 * the spec leaves to plugins). Stable: runtimes and operators match on them.
 */
export const CNI_CODE = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  NOT_AVAILABLE: 50,
  NOT_AVAILABLE_LIMITED: 51,
  /** weft: the pool has no free address. */
  POOL_EXHAUSTED: 100,
  /** weft: the requested address belongs to another container. */
  ADDRESS_TAKEN: 101,
  /** weft: the requested address may not be handed out (network, broadcast, gateway, excluded, outside the node subnet). */
  ADDRESS_UNAVAILABLE: 102,
  /** weft: CHECK found the attachment not as ADD left it. */
  CHECK_FAILED: 103,
  /** weft: a kernel operation (link, address, route) failed. */
  KERNEL: 104,
  /** weft: an unexpected failure inside the agent (a bug: please report it). */
  INTERNAL: 105,
} as const;
export type CniCode = (typeof CNI_CODE)[keyof typeof CNI_CODE];
