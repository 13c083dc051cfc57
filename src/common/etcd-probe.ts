import { connect } from "node:net";

/**
 * Why each etcd endpoint cannot be used, in words: name resolution, TCP
 * connect (refused, unreachable, timed out). The etcd client reports one
 * error for all endpoints together; this says which one fails and how.
 */
export async function probeEndpoints(endpoints: readonly string[], timeoutMs = 1000): Promise<string[]> {
  return Promise.all(endpoints.map(async (e) => `${e}: ${await probe(e, timeoutMs)}`));
}

async function probe(endpoint: string, timeoutMs: number): Promise<string> {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return "not a URL";
  }
  const port = Number(url.port || (url.protocol === "https:" ? 443 : 2379));
  const host = url.hostname.replace(/^\[|\]$/g, "");
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: timeoutMs });
    const done = (why: string): void => {
      s.destroy();
      resolve(why);
    };
    s.once("connect", () => done("TCP connects; etcd itself fails (TLS, auth or the server: see the error)"));
    s.once("timeout", () => done(`no answer within ${timeoutMs} ms (host down or traffic dropped)`));
    s.once("error", (e: NodeJS.ErrnoException) => {
      const what: Record<string, string> = {
        ECONNREFUSED: "connection refused (nothing listens on that port)",
        ENOTFOUND: `cannot resolve the host name ${host}`,
        EAI_AGAIN: `cannot resolve the host name ${host} (DNS not answering)`,
        EHOSTUNREACH: "host unreachable",
        ENETUNREACH: "network unreachable",
      };
      done(what[e.code ?? ""] ?? e.message);
    });
  });
}
