import { WeftError } from "../common/errors.js";

/** One thing wrong with a registry entry: the field (a path like `ports[1].name`) and what is wrong with it. */
export interface EntryIssue {
  /** "" when the entry as a whole is wrong (for instance not JSON). */
  readonly field: string;
  readonly message: string;
}

/**
 * A service or endpoint given to the registry (or read from it) does not
 * validate. The message names the entry and each wrong field and says what
 * the field takes; `issues` has the same, for callers that reword it (the CLI
 * names its flags instead of the JSON fields).
 */
export class RegistryEntryError extends WeftError {
  readonly code = "WEFT_REGISTRY_INVALID";

  constructor(
    /** What was being validated, e.g. `service default/web`. */
    readonly subject: string,
    readonly issues: readonly EntryIssue[],
  ) {
    super(`${subject}: ${issues.map(formatIssue).join("; ")}`);
  }

  /** The first wrong field ("" for the entry as a whole). */
  get field(): string {
    return this.issues[0]?.field ?? "";
  }
}

export function formatIssue(i: EntryIssue): string {
  return i.field ? `${i.field} ${i.message}` : i.message;
}

/** etcd cannot be reached or refused the request; the same call may succeed later. */
export class RegistryUnavailableError extends WeftError {
  readonly code = "WEFT_REGISTRY_UNAVAILABLE";

  constructor(what: string, endpoints: readonly string[], cause: unknown) {
    super(`service registry: ${what} failed: etcd at ${endpoints.join(",")} cannot be reached or refused it: ${cause instanceof Error ? cause.message : String(cause)}`, {
      recoverable: true,
      cause,
      hint: "check that etcd runs and that --etcd-endpoints (WEFT_ETCD_ENDPOINTS) points at it",
    });
  }
}
