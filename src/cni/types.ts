// What the CNI handlers need from the agent they run in. Types only.
import type { EndpointKey, EndpointSpec } from "../backend/types.js";
import type { Logger } from "../common/log.js";
import type { IpamService } from "../ipam/ipam.js";
import type { PodLinks } from "./links.js";

export interface CniHost {
  readonly ipam: IpamService;
  readonly links: PodLinks;
  readonly log: Logger;
  /** Tells the data path about a local pod (ebpf endpoint map, ...); backends that need nothing accept it. */
  addEndpoint(e: EndpointSpec): Promise<void>;
  removeEndpoint(e: EndpointKey): Promise<boolean>;
  /** Pod MTU: FLANNEL_MTU from the node's subnet file (undefined until the agent wrote it). */
  podMtu(): number | undefined;
  /** Why pods cannot be wired now (data path not ready), or undefined. */
  notReady(): string | undefined;
}

/** What a handler returns to the plugin binary: its stdout and exit code. */
export interface CniReply {
  readonly exit: number;
  readonly stdout: string;
}
