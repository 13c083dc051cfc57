import { WeftError } from "../common/errors.js";
import { CNI_CODE, type CniCode } from "../common/cni-codes.js";

/**
 * IPAM's errors. Each maps to the CNI error code a plugin prints for it, so
 * the CNI layer never guesses.
 */
export abstract class IpamError extends WeftError {
  abstract readonly cniCode: CniCode;
}

/** The `ipam` section (pools, exclusions, reservations, routes) is not usable for this node. */
export class IpamConfigError extends IpamError {
  readonly code = "WEFT_IPAM_CONFIG";
  readonly cniCode = CNI_CODE.INVALID_CONFIG;
}

/** The node holds no subnet lease right now: nothing may be handed out. */
export class NoLeaseError extends IpamError {
  readonly code = "WEFT_IPAM_NO_LEASE";
  readonly cniCode = CNI_CODE.TRY_AGAIN_LATER;
  constructor(message: string) {
    super(message, { recoverable: true, hint: "the agent is (re)acquiring its subnet lease from etcd; retry shortly" });
  }
}

/** Every address of the pool is in use (or excluded, or reserved). */
export class PoolExhaustedError extends IpamError {
  readonly code = "WEFT_IPAM_EXHAUSTED";
  readonly cniCode = CNI_CODE.POOL_EXHAUSTED;
}

/** The requested address is held by another container. */
export class AddressTakenError extends IpamError {
  readonly code = "WEFT_IPAM_TAKEN";
  readonly cniCode = CNI_CODE.ADDRESS_TAKEN;
}

/** The requested address may never be handed out here. */
export class AddressUnavailableError extends IpamError {
  readonly code = "WEFT_IPAM_UNAVAILABLE";
  readonly cniCode = CNI_CODE.ADDRESS_UNAVAILABLE;
}

/** The state could not be written durably; the operation was undone. */
export class IpamIoError extends IpamError {
  readonly code = "WEFT_IPAM_IO";
  readonly cniCode = CNI_CODE.IO_FAILURE;
}

/**
 * The state on disk cannot be read, or contradicts itself; the agent refuses
 * to guess (that could hand an address out twice): no address is handed out
 * and nothing is written until the state is repaired.
 */
export class IpamStateError extends IpamError {
  readonly code = "WEFT_IPAM_STATE";
  readonly cniCode = CNI_CODE.IO_FAILURE;
}

/** Another process holds the IPAM state directory's lock (one agent per --state-dir). */
export class IpamLockedError extends IpamError {
  readonly code = "WEFT_IPAM_LOCKED";
  readonly cniCode = CNI_CODE.TRY_AGAIN_LATER;
}
