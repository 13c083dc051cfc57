import { sweepMounts, sweepNamespaces } from "../../src/harness/netns.js";
import { sweepContainers } from "../../src/harness/podman.js";

/**
 * Namespaces and bpffs mounts left by a run that was killed are removed
 * before and after the suite; those of a run still going (a soak, a
 * benchmark, another suite) are left alone (netns.ts knows each one's
 * maker). WEFT_NO_SWEEP=1 skips the sweep altogether, containers included.
 */
const sweep = process.env["WEFT_NO_SWEEP"] !== "1";

export async function setup(): Promise<void> {
  if (!sweep) return;
  await sweepContainers();
  await sweepNamespaces();
  await sweepMounts();
}

export async function teardown(): Promise<void> {
  if (!sweep) return;
  const left = [...(await sweepContainers()), ...(await sweepNamespaces()), ...(await sweepMounts())];
  if (left.length > 0) console.warn(`removed namespaces a test left behind: ${left.join(", ")}`);
}
