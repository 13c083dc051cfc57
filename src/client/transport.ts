import { request, type ClientRequest, type IncomingMessage, type RequestOptions } from "node:http";
import type { ApiErrorBody } from "./types.js";

/** Where the node's agent serves the discovery API. */
export type Target = { readonly socketPath: string } | { readonly host: string; readonly port: number };

/** The agent's Unix socket, as mounted into pods by default. */
export const DEFAULT_SOCKET = "/run/weft/discovery.sock";

/**
 * A target from text: "unix:/run/weft/discovery.sock", "/run/weft/discovery.sock"
 * or "http://169.254.20.10:8053". Default: $WEFT_DISCOVERY (same forms), else the
 * default socket.
 */
export function parseTarget(text: string | undefined = process.env["WEFT_DISCOVERY"]): Target {
  const t = text ?? DEFAULT_SOCKET;
  if (t.startsWith("unix:")) return { socketPath: t.slice(5) };
  if (t.startsWith("/")) return { socketPath: t };
  const m = /^http:\/\/([^/:\s]+|\[[0-9a-fA-F:]+\]):(\d{1,5})\/?$/.exec(t);
  if (!m?.[1] || !m[2]) throw new TypeError(`"${t}" is not a discovery target: give unix:/path/to.sock or http://host:port`);
  return { host: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

/** A request the agent refused (4xx/5xx), with its reason. */
export class DiscoveryApiError extends Error {
  readonly code = "WEFT_DISCOVERY_REFUSED";
  constructor(readonly status: number, readonly reason: string, message: string) {
    super(message);
  }
}

/** Request options for `path` at `target`. */
export function requestOptions(target: Target, method: string, path: string, headers: Record<string, string> = {}): RequestOptions {
  const base = "socketPath" in target ? { socketPath: target.socketPath } : { host: target.host, port: target.port };
  return { ...base, method, path, headers: { accept: "application/json", ...headers } };
}

/** Reads a whole (small) response body. */
export function readBody(res: IncomingMessage, max = 16 << 20): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    res.on("data", (d: Buffer) => {
      n += d.length;
      if (n > max) {
        res.destroy();
        reject(new Error(`response larger than ${max} bytes`));
      } else parts.push(d);
    });
    res.on("end", () => resolve(Buffer.concat(parts).toString("utf8")));
    res.on("error", reject);
  });
}

/** The error of a refused request, from its JSON body when it has one. */
export async function refusal(res: IncomingMessage): Promise<DiscoveryApiError> {
  const text = await readBody(res, 1 << 20).catch(() => "");
  let body: Partial<ApiErrorBody> = {};
  try {
    body = JSON.parse(text) as Partial<ApiErrorBody>;
  } catch {
    body = { error: text.trim() };
  }
  const reason = body.reason ?? "unknown";
  return new DiscoveryApiError(res.statusCode ?? 0, reason, `the agent answered ${res.statusCode}: ${body.error ?? text.trim()} (${reason})`);
}

/** One JSON request and its parsed 2xx answer; DiscoveryApiError otherwise. */
export function call<T>(target: Target, method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req: ClientRequest = request(requestOptions(target, method, path, payload === undefined ? {} : { "content-type": "application/json" }), (res) => {
      const ok = (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300;
      if (!ok) return void refusal(res).then(reject, reject);
      readBody(res).then((t) => resolve((t === "" ? undefined : JSON.parse(t)) as T), reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer from the agent in ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(payload);
  });
}
