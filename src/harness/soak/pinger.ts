import type { ChildProcess } from "node:child_process";
import type { Netns } from "../netns.js";

/**
 * Continuous pings from one pod to another (`ping -n -i 0.2` in the pod's
 * namespace), each reply reported as it arrives. A ping that exits is
 * started again until stop().
 */
export class Pinger {
  private child: ChildProcess | undefined;
  private stopped = false;
  constructor(readonly from: Netns, readonly to: string, readonly intervalS: number, private readonly onReply: () => void) {}

  start(): void {
    if (this.stopped) return;
    const c = this.from.spawn(["ping", "-n", "-i", String(this.intervalS), this.to]);
    this.child = c;
    let buf = "";
    c.stdout?.on("data", (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (/ bytes from .*icmp_seq=\d+/.test(line)) this.onReply();
      }
    });
    c.stderr?.resume();
    c.once("exit", () => {
      if (!this.stopped) setTimeout(() => this.start(), 200);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once("exit", r));
    c.kill("SIGKILL");
    await exited;
  }
}
