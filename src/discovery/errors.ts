import { WeftError } from "../common/errors.js";

/**
 * Why the discovery API refused a request: a fixed vocabulary (metric label
 * values and the `reason` of every error body).
 */
export const REFUSALS = [
  "acl", "not_found", "method", "bad_query", "bad_last_event_id", "bad_body", "too_large", "media_type",
  "not_a_pod", "not_own_address", "other_namespace", "not_owner", "conflict", "too_many_publications",
  "too_many_subscribers", "not_synced", "unavailable", "publication_off",
] as const;
export type Refusal = (typeof REFUSALS)[number];

/** A request the discovery API refuses: the HTTP status, a reason from REFUSALS and a message saying what to do. */
export class DiscoveryRequestError extends WeftError {
  readonly code = "WEFT_DISCOVERY_REFUSED";

  /** Extra response headers (Allow for 405). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(readonly status: number, readonly reason: Refusal, message: string, opts: { hint?: string; recoverable?: boolean; cause?: unknown; headers?: Record<string, string> } = {}) {
    super(message, opts);
    this.headers = opts.headers ?? {};
  }

  /** The JSON body of the refusal. */
  body(): { error: string; reason: Refusal } {
    return { error: this.message, reason: this.reason };
  }
}

export const refuse = (status: number, reason: Refusal, message: string, headers?: Record<string, string>): DiscoveryRequestError =>
  new DiscoveryRequestError(status, reason, message, headers === undefined ? {} : { headers });
