/**
 * What the discovery API needs to know about the node's pods (the agent's
 * IPAM answers it): which pod holds an address, which pod a network
 * namespace is, and the addresses of a pod. A pod is known only once the
 * agent attached it through CNI, and is forgotten when its addresses are
 * released (CNI DEL, GC, the netns reconciler).
 */
export interface PodRef {
  readonly containerId: string;
  /** K8S_POD_NAMESPACE / K8S_POD_NAME from CNI_ARGS ("" when the runtime gave none). */
  readonly namespace: string;
  readonly name: string;
  /** Every address the pod holds on this node, canonical text. */
  readonly addresses: readonly string[];
}

export interface PodDirectory {
  byAddress(ip: string): PodRef | undefined;
  /** By the inode of the pod's network namespace (as recorded at ADD; 0 never matches). */
  byNetns(inode: number): PodRef | undefined;
  byContainer(containerId: string): PodRef | undefined;
  /** Calls `f` after a pod's address is released, whatever released it. */
  onReleased(f: (containerId: string, ip: string) => Promise<void>): void;
}

/** "ns/name" of a pod, or its container id when the runtime gave no name. */
export function podLabel(p: Pick<PodRef, "namespace" | "name" | "containerId">): string {
  return p.name ? `${p.namespace || "-"}/${p.name}` : p.containerId.slice(0, 12);
}
