import { labelKeyProblem, labelProblem, labelValueProblem } from "../registry/types.js";
import type { Endpoint, Service } from "../registry/types.js";
import { refuse } from "./errors.js";

/**
 * What a subscriber asked for: `namespace`, `name` (a service, and its
 * endpoints) and `label` selectors (`key=value`, or `key` for "has the
 * label"; all must hold). Labels are read from a `labels` object on a service
 * or an endpoint; an entry without one matches no label selector.
 */
export interface Filter {
  readonly namespace: string | undefined;
  readonly name: string | undefined;
  readonly labels: readonly (readonly [key: string, value: string | undefined])[];
  /** A canonical text of the filter: subscribers with equal keys receive equal bytes. */
  readonly key: string;
}

export interface ServicesQuery {
  readonly filter: Filter;
  readonly watch: boolean;
}

const PARAMS = ["watch", "namespace", "name", "label"];
export const MAX_LABELS = 16;

/** Parses the query of `GET /v1/services`; refuses (400 bad_query) anything it does not take, saying what. */
export function parseServicesQuery(search: URLSearchParams): ServicesQuery {
  const seen = new Set<string>();
  for (const k of search.keys()) {
    if (!PARAMS.includes(k)) throw refuse(400, "bad_query", `unknown query parameter "${printable(k)}"; the parameters are ${PARAMS.join(", ")}`);
    if (k !== "label" && seen.has(k)) throw refuse(400, "bad_query", `query parameter "${k}" is given twice`);
    seen.add(k);
  }
  const w = search.get("watch");
  if (w !== null && !["1", "0", "true", "false", ""].includes(w)) throw refuse(400, "bad_query", `watch=${printable(w)}: give watch=1 (a stream) or leave it out (a snapshot)`);
  const watch = w === "1" || w === "true" || w === "";
  const label = (what: string): string | undefined => {
    const v = search.get(what);
    if (v === null) return undefined;
    const p = labelProblem(v);
    if (p) throw refuse(400, "bad_query", `${what} ${printable(p)}`);
    return v;
  };
  const namespace = label("namespace");
  const name = label("name");
  const labels = search.getAll("label").map(parseSelector);
  if (labels.length > MAX_LABELS) throw refuse(400, "bad_query", `${labels.length} label selectors; at most ${MAX_LABELS}`);
  labels.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const key = JSON.stringify([namespace ?? null, name ?? null, labels]);
  return { watch, filter: { namespace, name, labels, key } };
}

function parseSelector(s: string): readonly [string, string | undefined] {
  const eq = s.indexOf("=");
  const k = eq < 0 ? s : s.slice(0, eq);
  const v = eq < 0 ? undefined : s.slice(eq + 1);
  if (labelKeyProblem(k)) {
    throw refuse(400, "bad_query", `label=${printable(s)}: the key must be a label key like app or example.com/tier (a name of 1-63 letters, digits, - _ .)`);
  }
  if (v !== undefined && labelValueProblem(v)) throw refuse(400, "bad_query", `label=${printable(s)}: the value must be at most 63 letters, digits, - _ . (starting and ending alphanumeric)`);
  return [k, v];
}

/** At most 80 characters of `s`, control characters escaped: hostile text is quoted, never echoed whole. */
export function printable(s: string): string {
  const t = s.length > 80 ? `${s.slice(0, 80)}...` : s;
  return JSON.stringify(t).slice(1, -1);
}

export const NO_FILTER: Filter = { namespace: undefined, name: undefined, labels: [], key: JSON.stringify([null, null, []]) };

/** True when the filter holds nothing but takes everything. */
export function isOpen(f: Filter): boolean {
  return f.namespace === undefined && f.name === undefined && f.labels.length === 0;
}

/** The `labels` object of a service or endpoint value, if it has one. */
export function labelsOf(value: Service | Endpoint | undefined): Readonly<Record<string, unknown>> | undefined {
  const l = (value as { labels?: unknown } | undefined)?.labels;
  return typeof l === "object" && l !== null && !Array.isArray(l) ? (l as Record<string, unknown>) : undefined;
}

/** Do these labels satisfy every label selector? (No selectors: yes.) */
export function labelsMatch(f: Filter, labels: Readonly<Record<string, unknown>> | undefined): boolean {
  if (f.labels.length === 0) return true;
  if (!labels) return false;
  return f.labels.every(([k, v]) => Object.hasOwn(labels, k) && (v === undefined || labels[k] === v));
}

/** Does the namespace and service name pass the filter? */
export function nameMatches(f: Filter, namespace: string, name: string): boolean {
  return (f.namespace === undefined || f.namespace === namespace) && (f.name === undefined || f.name === name);
}

/** Does an entry pass the filter? `name`: the service's name (for an endpoint too). */
export function matches(f: Filter, namespace: string, name: string, value: Service | Endpoint | undefined): boolean {
  return nameMatches(f, namespace, name) && labelsMatch(f, labelsOf(value));
}
