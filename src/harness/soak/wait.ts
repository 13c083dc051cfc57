/** The soak's waiting: a pause, and polling a condition. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 200 ms for up to `ms`; true once it holds. */
export async function within(ms: number, cond: () => Promise<boolean>): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await sleep(200);
  }
  return false;
}
