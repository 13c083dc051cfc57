import { sweepMounts, sweepNamespaces } from "../../src/harness/netns.js";

/** Namespaces left by a run that was killed are removed before and after the suite. */
export async function setup(): Promise<void> {
  await sweepNamespaces();
  await sweepMounts();
}

export async function teardown(): Promise<void> {
  const left = [...(await sweepNamespaces()), ...(await sweepMounts())];
  if (left.length > 0) console.warn(`removed namespaces a test left behind: ${left.join(", ")}`);
}
