import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { createConnection, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent } from "../../src/agent/agent.js";
import { MAX_REQUEST_BYTES, queryCounters, startControlSocket } from "../../src/agent/control.js";
import { AGENT_DEFAULTS, parseAgentOptions } from "../../src/agent/options.js";
import { silentLogger } from "../../src/common/log.js";
import { projectRoot } from "../../src/common/paths.js";

/**
 * The control socket is a door too: root-only, but whatever connects must
 * not be able to grow the agent's memory without bound or see the socket
 * before its mode is set. The agent here is real but not started (its
 * status answers from empty state).
 */
let dir: string;
let sock: string;
let agent: Agent;
let server: Server;
let statusCalls = 0;
const refused: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "weft-control-"));
  sock = join(dir, "agent.sock");
  agent = new Agent(parseAgentOptions({ ...AGENT_DEFAULTS, stateDir: dir, controlSocket: sock }), silentLogger);
  const real = agent.status.bind(agent);
  agent.status = (w) => (statusCalls++, real(w)); // counts replies produced; each is the real one
  server = await startControlSocket(agent, sock, { onRefused: (r) => refused.push(r) });
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

function connect(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection(sock, () => resolve(s));
    s.on("error", reject);
  });
}

describe("the control socket under hostile clients", () => {
  it("is created under umask 0177: never reachable by others, not even between bind and chmod (strace)", () => {
    const child = join(dir, "child.sock");
    const script = `
      const { Agent } = await import(${JSON.stringify(join(projectRoot(), "dist/src/agent/agent.js"))});
      const { startControlSocket } = await import(${JSON.stringify(join(projectRoot(), "dist/src/agent/control.js"))});
      const { parseAgentOptions, AGENT_DEFAULTS } = await import(${JSON.stringify(join(projectRoot(), "dist/src/agent/options.js"))});
      const { silentLogger } = await import(${JSON.stringify(join(projectRoot(), "dist/src/common/log.js"))});
      const a = new Agent(parseAgentOptions({ ...AGENT_DEFAULTS, controlSocket: ${JSON.stringify(child)} }), silentLogger);
      const s = await startControlSocket(a, ${JSON.stringify(child)});
      s.close();`;
    const r = spawnSync("strace", ["-f", "-e", "trace=umask,bind,chmod,fchmodat", process.execPath, "--input-type=module", "-e", script], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    const calls = r.stderr.split("\n").filter((l) => /umask\(|bind\(|chmod/.test(l));
    const bindAt = calls.findIndex((l) => l.includes("bind(") && l.includes(child));
    expect(bindAt, calls.join("\n")).toBeGreaterThan(0);
    const lastUmask = calls.slice(0, bindAt).reverse().find((l) => /umask\(/.test(l));
    expect(lastUmask).toMatch(/umask\(0177\)/);
    expect(statSync(sock).mode & 0o777).toBe(0o600);
  });

  it("a request line longer than the limit closes that connection, with a reason; others are served", async () => {
    const s = await connect();
    let reply = "";
    s.on("data", (d: Buffer) => (reply += d.toString()));
    const closed = new Promise((r) => s.on("close", r));
    const chunk = Buffer.alloc(1 << 20, 0x61); // 1 MiB of "a", no newline
    for (let sent = 0; sent <= MAX_REQUEST_BYTES && !s.destroyed; sent += chunk.length) {
      if (!s.write(chunk)) await new Promise((r) => s.once("drain", r).once("close", r));
    }
    await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error("the agent kept reading")), 5000))]);
    expect(reply).toMatch(/"ok":false.*longer than/);
    expect(refused).toContain("too_long");
    expect((await queryCounters(sock)).ready).toBe(false); // still answering
  });

  it("a status request with a bad peer window is refused saying what is wrong; a good one answers", async () => {
    const s = await connect();
    let reply = "";
    s.on("data", (d: Buffer) => (reply += d.toString()));
    s.write('status {"peerLimit":-1}\nstatus {"peerOffset":"x"}\nstatus {nope\nstatus null\nstatus [1]\nstatus {"peerLimit":0}\nstatus \n');
    for (let i = 0; i < 100 && reply.split("\n").filter(Boolean).length < 7; i++) await new Promise((r) => setTimeout(r, 20));
    s.destroy();
    const lines = reply.split("\n").filter(Boolean).map((l) => JSON.parse(l) as { ok: boolean; error?: string; status?: { peers: unknown[]; peerCount: number } });
    expect(lines.map((l) => l.ok)).toEqual([false, false, false, false, false, true, true]);
    expect(lines[0]!.error).toMatch(/peerLimit must be a whole number of 0 or more, got -1/);
    expect(lines[1]!.error).toMatch(/peerOffset must be a whole number of 0 or more, got "x"/);
    expect(lines[2]!.error).toMatch(/JSON/);
    expect(lines[3]!.error).toMatch(/must be a JSON object such as \{"peerLimit":20\}, got null/);
    expect(lines[4]!.error).toMatch(/must be a JSON object/);
    expect(lines[5]!.status).toMatchObject({ peers: [], peerCount: 0 });
    expect(lines[6]!.status).toMatchObject({ peerCount: 0 }); // a trailing space is no argument
  });

  it("a client that pipelines requests and never reads is not read further: the answers it has not taken stay bounded", async () => {
    const s = await connect();
    s.pause(); // never reads
    const before = statusCalls;
    const n = 20_000;
    s.write("status\n".repeat(n));
    await new Promise((r) => setTimeout(r, 1500));
    const produced = statusCalls - before;
    const replyBytes = Buffer.byteLength(JSON.stringify({ ok: true, status: agent.status() })) + 1;
    // What sits in the agent: at most ~1 MiB of answers plus what the kernel's socket buffers took.
    expect(produced).toBeLessThan(Math.ceil((4 << 20) / replyBytes) + 100);
    expect(produced).toBeLessThan(n);
    // Once the client reads, every request is answered, in order.
    let lines = 0;
    s.on("data", (d: Buffer) => {
      for (const b of d) if (b === 10) lines++;
    });
    s.resume();
    const end = Date.now() + 20_000;
    while (lines < n && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(lines).toBe(n);
    s.destroy();
  });
});
