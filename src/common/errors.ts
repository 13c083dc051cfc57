/**
 * weft's error hierarchy. Every error carries a stable `code` (for logs,
 * metrics and callers' switch statements), says what was wrong and how to fix
 * it, and marks whether retrying the same operation later can succeed.
 */
export abstract class WeftError extends Error {
  /** Stable identifier, e.g. "WEFT_CONFIG_INVALID". Never reworded. */
  abstract readonly code: string;
  /** True when the same call may succeed later without a change of input. */
  readonly recoverable: boolean;
  /** How to fix it, when the message alone does not say. */
  readonly hint: string | undefined;

  constructor(message: string, opts: { hint?: string; recoverable?: boolean; cause?: unknown } = {}) {
    super(opts.hint ? `${message} (${opts.hint})` : message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.recoverable = opts.recoverable ?? false;
    this.hint = opts.hint;
  }
}

/** A flag, option, file or value given by the user is not acceptable. */
export class ConfigError extends WeftError {
  readonly code = "WEFT_CONFIG_INVALID";
}

/** An address, prefix or MAC string does not parse. */
export class AddressError extends WeftError {
  readonly code = "WEFT_ADDRESS_INVALID";
}

/** The WASM core is missing, was built for another ABI, or refused an argument. */
export class CoreError extends WeftError {
  constructor(
    readonly code: CoreErrorCode,
    message: string,
    opts: { hint?: string; recoverable?: boolean; cause?: unknown } = {},
  ) {
    super(message, opts);
  }
}

export type CoreErrorCode =
  | "WEFT_CORE_MISSING"
  | "WEFT_CORE_ABI"
  | "WEFT_CORE_INVALID"
  | "WEFT_CORE_NOT_FOUND"
  | "WEFT_CORE_FULL"
  | "WEFT_CORE_NO_MEMORY";

