/**
 * Runs async work one at a time per key, in call order; different keys run
 * concurrently. A failure settles its own caller and does not stop the
 * work queued behind it. Keys with nothing queued are forgotten.
 */
export class KeyedSerial {
  private readonly tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Whether `key` has work queued or running. */
  busy(key: string): boolean {
    return this.tails.has(key);
  }

  /** Keys with work queued or running. */
  get size(): number {
    return this.tails.size;
  }
}
