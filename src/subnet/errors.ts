import { WeftError } from "../common/errors.js";

/** etcd could not be reached or refused a request; the caller retries. */
export class RegistryUnavailableError extends WeftError {
  readonly code = "WEFT_ETCD_UNAVAILABLE";
  constructor(what: string, cause: unknown) {
    super(`etcd: ${what} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { recoverable: true, cause });
  }
}
