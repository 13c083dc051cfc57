/**
 * The discovery API's JSON, as the agent sends it and the client reads it.
 * The client depends on nothing else in weft: an application imports only
 * `weft/client`. The entries are the service registry's (README, "Service
 * discovery"); a change is the line `weft svc watch` prints, plus the etcd
 * revision it happened at.
 */

export interface ServicePort {
  readonly name?: string | undefined;
  readonly protocol: "TCP" | "UDP" | "SCTP";
  readonly port: number;
}

export interface Service {
  readonly namespace: string;
  readonly name: string;
  readonly type: "ClusterIP" | "Headless" | "ExternalName";
  readonly clusterIPs: readonly string[];
  readonly externalName?: string | undefined;
  readonly ports: readonly ServicePort[];
  readonly publishNotReadyAddresses: boolean;
  readonly labels?: Readonly<Record<string, string>> | undefined;
}

export interface Endpoint {
  readonly namespace: string;
  /** The name of the service this endpoint backs. */
  readonly service: string;
  readonly id: string;
  readonly addresses: readonly string[];
  readonly hostname?: string | undefined;
  readonly ready: boolean;
  readonly nodeName?: string | undefined;
  readonly ports: readonly ServicePort[];
  readonly labels?: Readonly<Record<string, string>> | undefined;
}

/** `GET /v1/services` and the `snapshot` event of a watch. */
export interface Snapshot {
  /** The etcd revision the snapshot is current through. */
  readonly revision: string;
  /** Why a watch got a snapshot: "initial", "compacted", "outside_replay", "unknown_revision". Absent on GET. */
  readonly reason?: string;
  readonly services: readonly Service[];
  readonly endpoints: readonly Endpoint[];
}

/** One change (a `put` or `delete` event of a watch). `name` is the service's name, for an endpoint too. */
export type Change =
  | { readonly revision: string; readonly kind: "service"; readonly op: "put"; readonly namespace: string; readonly name: string; readonly value: Service }
  | { readonly revision: string; readonly kind: "service"; readonly op: "delete"; readonly namespace: string; readonly name: string }
  | { readonly revision: string; readonly kind: "endpoint"; readonly op: "put"; readonly namespace: string; readonly name: string; readonly id: string; readonly value: Endpoint }
  | { readonly revision: string; readonly kind: "endpoint"; readonly op: "delete"; readonly namespace: string; readonly name: string; readonly id: string };

/** The last event before the agent closes a stream it gave up on (a consumer too far behind). */
export interface Dropped {
  readonly reason: string;
  /** The last revision the stream delivered in full: resume from it. */
  readonly revision: string;
}

/** What `POST /v1/endpoints` takes: the caller's own endpoint. */
export interface PublishRequest {
  /** The service's name (a DNS label). */
  readonly service: string;
  /** Default and only allowed value: the pod's own namespace. */
  readonly namespace?: string;
  /** Default: the pod's name (else the first 12 characters of its container id). */
  readonly id?: string;
  /** Default: the calling pod's address. Only the pod's own addresses are accepted. */
  readonly addresses?: readonly string[];
  readonly hostname?: string;
  readonly ready?: boolean;
  readonly ports?: readonly { readonly name?: string; readonly protocol?: "TCP" | "UDP" | "SCTP"; readonly port: number }[];
  /** Labels subscribers select by (`label=k=v`). */
  readonly labels?: Readonly<Record<string, string>>;
}

/** The agent's answer to a publication. */
export interface Publication {
  readonly key: string;
  readonly endpoint: Endpoint;
  /** The pod the publication is bound to: it goes when the pod goes. */
  readonly pod: { readonly namespace: string; readonly name: string; readonly containerId: string };
}

/** A refusal: the HTTP status and the agent's reason (every 4xx carries one). */
export interface ApiErrorBody {
  readonly error: string;
  readonly reason: string;
}
