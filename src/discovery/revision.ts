import type { ServiceRegistry } from "../registry/store.js";

/**
 * Asks etcd whether it still has `revision` of the registry: a one-key read
 * at that revision, which etcd refuses once the revision is compacted. Any
 * other failure (etcd away) is "unknown": the caller serves from what it has.
 */
export async function checkRevision(registry: ServiceRegistry, revision: string): Promise<"available" | "compacted" | "unknown"> {
  try {
    await registry.client.getAll().prefix(`${registry.prefix}/`).revision(revision).limit(1).keys();
    return "available";
  } catch (e) {
    return /compacted/i.test((e as Error).message) ? "compacted" : "unknown";
  }
}
