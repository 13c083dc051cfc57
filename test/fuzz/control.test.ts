import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent } from "../../src/agent/agent.js";
import { queryCounters, startControlSocket, takeCniReply } from "../../src/agent/control.js";
import { AGENT_DEFAULTS, parseAgentOptions } from "../../src/agent/options.js";
import { silentLogger } from "../../src/common/log.js";
import { fuzz, mutateBytes, mutateJson, randomJson, type Rng } from "./lib.js";

/**
 * Control-socket frames: the requests `weft status`, `weft ipam` and the CNI
 * plugin binary send, mutated, plus raw bytes, written in random pieces.
 * Every newline-terminated line must get exactly one answer (a JSON line, or
 * a framed cni-reply), in order, and the agent must go on answering.
 */
let dir: string;
let sock: string;
let server: Server;
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown): void => void unhandled.push(e);

beforeAll(async () => {
  process.on("unhandledRejection", onUnhandled);
  dir = mkdtempSync(join(tmpdir(), "weft-fuzz-control-"));
  sock = join(dir, "agent.sock");
  const agent = new Agent(parseAgentOptions({ ...AGENT_DEFAULTS, stateDir: dir, controlSocket: sock }), silentLogger);
  server = await startControlSocket(agent, sock);
});
afterAll(async () => {
  process.off("unhandledRejection", onUnhandled);
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const INVOCATION = {
  role: "weft", stdin: JSON.stringify({ cniVersion: "1.1.0", name: "weft", type: "weft" }),
  env: { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c1", CNI_NETNS: "/var/run/netns/x", CNI_IFNAME: "eth0", CNI_PATH: "/opt/cni/bin" },
};

function frame(rng: Rng): Buffer {
  switch (rng.int(0, 7)) {
    case 0: return Buffer.from(rng.pick(["status", "counters", "ipam-ls", "ipam-show 198.18.1.2", "", "nope"]));
    case 1: return Buffer.from(`${rng.pick(["endpoint-add", "endpoint-del", "ipam-gc"])} ${JSON.stringify(mutateJson(rng, { ip: "198.18.1.2", ifname: "wv1", mac: "0a:58:c6:12:01:02", deadNow: true }))}`);
    case 2: return Buffer.from(`cni ${JSON.stringify(mutateJson(rng, INVOCATION))}`);
    case 3: return Buffer.from(`cni ${JSON.stringify(randomJson(rng))}`);
    case 4: return Buffer.from(mutateBytes(rng, Buffer.from(`cni ${JSON.stringify(INVOCATION)}`)));
    case 5: return Buffer.from(`${rng.pick(["endpoint-add ", "ipam-gc ", "cni ", "ipam-show "])}${rng.string(rng.length(200))}`);
    case 6: return Buffer.from(rng.bytes(rng.length(300)));
    default: return Buffer.from(mutateBytes(rng, Buffer.from("endpoint-add {\"ip\":\"198.18.1.2\",\"ifname\":\"wv1\",\"mac\":\"0a:58:c6:12:01:02\"}")));
  }
}

/** Sends `data` in random pieces; resolves with the answers (and how many refused) once `want` have come. */
function exchange(rng: Rng, data: Buffer, want: number): Promise<{ answers: number; refused: number }> {
  return new Promise((resolve, reject) => {
    const s = createConnection(sock);
    let buf = Buffer.alloc(0);
    let answers = 0;
    let refused = 0;
    const timer = setTimeout(() => reject(new Error(`only ${answers} of ${want} answers in 10 s`)), 10_000);
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (buf.subarray(0, 9).toString() === "cni-reply") {
          const r = takeCniReply(buf);
          if (r === "malformed") return reject(new Error(`malformed cni-reply: ${buf.subarray(0, 80).toString()}`));
          if (!r) break;
          JSON.parse(r.reply.stdout); // the plugin's stdout is CNI JSON
          if (r.reply.exit !== 0) refused++;
          buf = buf.subarray(r.used);
        } else {
          const nl = buf.indexOf(10);
          if (nl < 0) break;
          const reply = JSON.parse(buf.subarray(0, nl).toString()) as { ok?: unknown };
          if (typeof reply.ok !== "boolean") return reject(new Error(`answer without ok: ${buf.subarray(0, nl).toString()}`));
          if (!reply.ok) refused++;
          buf = buf.subarray(nl + 1);
        }
        if (++answers === want) {
          clearTimeout(timer);
          s.end();
          resolve({ answers, refused });
        }
      }
    });
    s.on("error", reject);
    s.on("connect", async () => {
      for (let at = 0; at < data.length;) {
        const n = rng.int(1, Math.max(1, data.length - at));
        s.write(data.subarray(at, at + n));
        at += n;
        if (rng.bool(0.2)) await new Promise((r) => setImmediate(r));
      }
      if (want === 0) {
        clearTimeout(timer);
        s.end();
        resolve({ answers: 0, refused: 0 });
      }
    });
  });
}

describe("fuzz: control-socket frames", () => {
  it("every line gets exactly one well-formed answer, in order, and the agent keeps answering", async () => {
    const report = await fuzz("control", { iterations: 2_000 }, async (rng) => {
      const frames = Array.from({ length: rng.int(1, 8) }, () => frame(rng));
      const data = Buffer.concat(frames.flatMap((f) => [f, Buffer.from("\n")]));
      const lines = data.reduce((n, b) => n + (b === 10 ? 1 : 0), 0);
      const r = await exchange(rng, data, lines);
      expect(r.answers).toBe(lines);
      return r.refused > 0 ? "refused" : "accepted";
    });
    expect(report.iterations).toBeGreaterThan(0);
    expect((await queryCounters(sock)).ready).toBe(false);
    expect(unhandled).toEqual([]);
  }, 120_000);
});
