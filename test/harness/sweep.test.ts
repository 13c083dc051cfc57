import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { run } from "../../src/common/exec.js";
import { Netns, ownerAlive, sweepNamespaces, uniqueTag } from "../../src/harness/netns.js";

/**
 * A sweep removes what a killed run left and nothing a live run uses: a test
 * suite started beside a 10-minute soak once deleted the soak's namespaces
 * under it. Real namespaces; the dead maker is a real process that exited.
 */
const made: string[] = [];
afterAll(async () => {
  for (const n of made) await run(["ip", "netns", "del", n]).catch(() => undefined);
});

const exists = async (name: string): Promise<boolean> => (await run(["ip", "netns", "list"])).split("\n").some((l) => l.split(" ")[0] === name);

describe("namespace sweep", () => {
  it("keeps a live maker's namespaces, removes a dead maker's, and one with no maker on record", async () => {
    const live = await Netns.create("live");
    made.push(live.name);
    const liveTag = live.name.slice(3, live.name.indexOf("-"));
    expect(ownerAlive(liveTag)).toBe(true);

    // A maker that has exited: its pid and start time on record, the process gone.
    const dead = uniqueTag();
    const child = spawnSync("sh", ["-c", "echo $$; cut -d' ' -f22 /proc/$$/stat"], { encoding: "utf8" });
    const [pid, started] = child.stdout.trim().split("\n");
    mkdirSync("/run/weft-harness", { recursive: true });
    writeFileSync(`/run/weft-harness/${dead}`, `${pid} ${started}\n`);
    expect(ownerAlive(dead)).toBe(false);
    await run(["ip", "netns", "add", `wft${dead}-gone`]);
    made.push(`wft${dead}-gone`);
    // No record at all (a run from before records were kept).
    const unknown = uniqueTag();
    await run(["ip", "netns", "add", `wft${unknown}-old`]);
    made.push(`wft${unknown}-old`);

    const swept = [
      ...(await sweepNamespaces(`wft${liveTag}`)),
      ...(await sweepNamespaces(`wft${dead}`)),
      ...(await sweepNamespaces(`wft${unknown}`)),
    ];
    expect(swept.sort()).toEqual([`wft${dead}-gone`, `wft${unknown}-old`].sort());
    expect(await exists(live.name)).toBe(true);
    expect(await exists(`wft${dead}-gone`)).toBe(false);
    // Forced (a cluster removing its own after a failed start): the live one goes too.
    expect(await sweepNamespaces(`wft${liveTag}`, true)).toEqual([live.name]);
    expect(await exists(live.name)).toBe(false);
  });
});
