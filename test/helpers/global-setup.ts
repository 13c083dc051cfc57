import { sweepMounts, sweepNamespaces } from "../../src/harness/netns.js";
import { sweepContainers } from "../../src/harness/podman.js";

/**
 * Namespaces left by a run that was killed are removed before and after the suite.
 * WEFT_NO_SWEEP=1 skips that, for a run beside another run on the same machine
 * (the sweep would remove the other run's namespaces).
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
