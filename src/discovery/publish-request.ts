import { RegistryEntryError } from "../registry/errors.js";
import { canonicalIp, idProblem, labelProblem, validateEndpoint, type EndpointSpec } from "../registry/types.js";
import { refuse } from "./errors.js";
import { printable } from "./filter.js";
import type { PodRef } from "./pods.js";

/** What a pod may put in `POST /v1/endpoints`. */
const FIELDS = ["service", "namespace", "id", "addresses", "hostname", "ready", "ports", "labels"];

export interface PublishPlan {
  readonly namespace: string;
  readonly service: string;
  readonly id: string;
  readonly spec: EndpointSpec;
}

/**
 * Checks a publication body against the calling pod: a JSON object of the
 * known fields only; the namespace is the pod's own (a pod the runtime named
 * no namespace for publishes into "default"); the addresses (default: the
 * pod's first) are the pod's own; the id defaults to the pod's name. Every
 * refusal names the field and says what it takes.
 */
export function planPublication(pod: PodRef, raw: unknown): PublishPlan {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw refuse(400, "bad_body", 'the body must be a JSON object like {"service":"web","ports":[{"name":"http","port":8080}]}');
  }
  const body = raw as Record<string, unknown>;
  const unknown = Object.keys(body).filter((k) => !FIELDS.includes(k));
  if (unknown.length > 0) throw refuse(400, "bad_body", `unknown field(s) ${unknown.map((k) => `"${printable(k)}"`).join(", ")}; the fields are ${FIELDS.join(", ")}`);
  const text = (k: string): string | undefined => {
    const v = body[k];
    if (v === undefined) return undefined;
    if (typeof v !== "string") throw refuse(400, "bad_body", `${k} must be a string`);
    return v;
  };
  const service = text("service");
  if (service === undefined) throw refuse(400, "bad_body", "service is required: the name of the service this endpoint backs");
  const sp = labelProblem(service);
  if (sp) throw refuse(400, "bad_body", `service ${printable(sp)}`);
  const own = pod.namespace || "default";
  const namespace = text("namespace") ?? own;
  if (namespace !== own) {
    throw refuse(403, "other_namespace", `a pod publishes only into its own namespace: this pod is in "${own}", not "${printable(namespace)}"`);
  }
  const id = text("id") ?? (pod.name || pod.containerId.slice(0, 12));
  const ip = idProblem(id);
  if (ip) throw refuse(400, "bad_body", `id ${printable(ip)}`);
  const addresses = body["addresses"] ?? pod.addresses.slice(0, 1);
  if (Array.isArray(addresses)) {
    for (const a of addresses) {
      const c = typeof a === "string" ? canonicalIp(a) : undefined;
      if (c !== undefined && !pod.addresses.includes(c)) {
        throw refuse(403, "not_own_address", `${c} is not an address of this pod (it holds ${pod.addresses.join(", ") || "none"}); a pod publishes only its own addresses`);
      }
    }
  }
  let spec: EndpointSpec;
  try {
    spec = validateEndpoint({ addresses, hostname: body["hostname"], ready: body["ready"], ports: body["ports"], labels: body["labels"] }, `endpoint ${namespace}/${service}/${id}`, { strict: true });
  } catch (e) {
    if (e instanceof RegistryEntryError) throw refuse(400, "bad_body", e.message);
    // The validator failed on the value itself (an object whose toString is not a function, where a
    // string belongs, makes its message fail): whatever it was, it is no endpoint.
    throw refuse(400, "bad_body", "a field holds a value of a shape no field takes (an object where a string, number or boolean belongs)");
  }
  return { namespace, service, id, spec };
}
