import { createServer, type Server } from "node:http";
import { ConfigError } from "../common/errors.js";
import { splitHostPort } from "../dns/hostport.js";
import type { Agent } from "./agent.js";

/**
 * /healthz: the process answers (200). /readyz: 200 only when the lease, the
 * data path, the subnet file, etcd and the route sync are all in place (503
 * with the failing conditions otherwise). /metrics: Prometheus text.
 */
export async function startHealthServer(agent: Agent, listen: string): Promise<Server> {
  const { host, port } = splitHostPort(listen);
  const server = createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? "/").split("?")[0];
      if (path === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      } else if (path === "/readyz") {
        const st = agent.status();
        const body = { ready: st.ready, ...st.readiness, ...(st.waiting.length > 0 ? { waiting: st.waiting } : {}) };
        res.writeHead(st.ready ? 200 : 503, { "content-type": "application/json" }).end(`${JSON.stringify(body)}\n`);
      } else if (path === "/metrics") {
        res.writeHead(200, { "content-type": agent.metrics.registry.contentType }).end(await agent.metrics.registry.metrics());
      } else {
        res.writeHead(404, { "content-type": "text/plain" }).end("try /healthz, /readyz or /metrics\n");
      }
    })().catch((e: Error) => res.writeHead(500).end(e.message));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) => reject(new ConfigError(`--health-listen ${listen}: ${e.code === "EADDRINUSE" ? "the address is in use" : e.message}`, {
      hint: "choose another host:port, or off",
    })));
    server.listen(port, host, () => resolve());
  });
  return server;
}
