import { call, parseTarget, type Target } from "./transport.js";
import type { Publication, PublishRequest } from "./types.js";

export interface PublishOptions {
  /** The agent (default: $WEFT_DISCOVERY, else /run/weft/discovery.sock). */
  readonly target?: string | Target;
}

/**
 * Publishes the calling pod's endpoint through its node's agent
 * (`POST /v1/endpoints`). The agent checks that the addresses are the pod's
 * own and binds the endpoint to the pod: it goes when the pod is deleted
 * (CNI DEL, or the netns reconciler) or the node dies. Publishing the same
 * id again replaces it. Rejects with DiscoveryApiError (status and reason).
 */
export function publish(req: PublishRequest, opts: PublishOptions = {}): Promise<Publication> {
  return call<Publication>(targetOf(opts), "POST", "/v1/endpoints", req);
}

/** Removes one of the calling pod's publications. Resolves false when it had none by that name. */
export async function unpublish(namespace: string, service: string, id: string, opts: PublishOptions = {}): Promise<boolean> {
  const path = `/v1/endpoints/${encodeURIComponent(namespace)}/${encodeURIComponent(service)}/${encodeURIComponent(id)}`;
  try {
    await call<unknown>(targetOf(opts), "DELETE", path);
    return true;
  } catch (e) {
    if ((e as { status?: number }).status === 404) return false;
    throw e;
  }
}

/** The calling pod's publications. */
export async function publications(opts: PublishOptions = {}): Promise<Publication[]> {
  return (await call<{ publications: Publication[] }>(targetOf(opts), "GET", "/v1/endpoints")).publications;
}

function targetOf(o: PublishOptions): Target {
  return typeof o.target === "object" ? o.target : parseTarget(o.target);
}
