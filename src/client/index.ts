/**
 * weft's discovery client: `import { subscribe, publish } from "weft/client"`.
 * It talks to the node's agent (the discovery API: HTTP and Server-Sent
 * Events over the agent's Unix socket or its node-local address), never to
 * etcd, so an application holds no etcd credentials. Node's http only.
 */
export { subscribe, Subscription, type SubscribeOptions, type SubscriptionEvent, type SubscriptionEvents } from "./subscribe.js";
export { publish, unpublish, publications, type PublishOptions } from "./publish.js";
export { call, DEFAULT_SOCKET, DiscoveryApiError, parseTarget, type Target } from "./transport.js";
export { SseError, SseParser, type SseEvent, type SseHandlers } from "./sse.js";
export type { ApiErrorBody, Change, Dropped, Endpoint, Publication, PublishRequest, Service, ServicePort, Snapshot } from "./types.js";
