import type { Logger } from "../common/log.js";
import type { Network } from "../backend/types.js";
import type { RouteCache } from "../routes/cache.js";
import { isEmpty, type RouteDiff, type RouteTable } from "../routes/table.js";
import type { AgentMetrics } from "./metrics.js";

/**
 * The one queue through which the route table reaches the data path: each
 * table change is applied as its diff, in order, one at a time, and the
 * periodic reconcile runs in the same queue, with the table as it is when its
 * turn comes. No apply runs while a reconcile compares the data path with the
 * table, so a reconcile never removes a peer an apply has just added (a
 * reconcile that worked from a list taken before it waited could). A
 * backend may read its data path ahead, outside the queue (readForReconcile).
 */
export class ApplyQueue {
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly table: RouteTable,
    private readonly network: () => Network | undefined,
    private readonly metrics: AgentMetrics,
    private readonly log: Logger,
    private readonly cache?: RouteCache,
  ) {}

  /** Changes the table now (`change` returns the diff) and queues the diff for the data path. */
  change(change: () => RouteDiff): void {
    const diff = change();
    if (isEmpty(diff)) return;
    this.cache?.save(this.table.all());
    this.enqueue(async () => {
      const end = this.metrics.applySeconds.startTimer();
      try {
        await this.network()?.apply(diff);
        this.metrics.counts.diffs++;
      } catch (e) {
        this.log.error({ err: (e as Error).message }, "applying a route change failed; the next reconcile retries");
      } finally {
        end();
      }
    });
  }

  /**
   * Compares the data path with the table and repairs it, in turn; resolves
   * with what was fixed. A backend that can read its data path ahead
   * (readForReconcile) reads and compares before the turn, outside the
   * queue, so that changes keep being applied meanwhile; in turn it keeps
   * the fixes the table as it is then still calls for.
   */
  reconcile(): Promise<number> {
    const net = this.network();
    const inTurn = (reading: unknown): Promise<number> => this.enqueue(async () => {
      const now = this.network();
      if (!now) return 0;
      return now.reconcile(this.table.all(), now === net ? reading : undefined);
    });
    if (!net?.readForReconcile) return inTurn(undefined); // queued at once, behind what is queued now
    return net.readForReconcile(this.table.all()).then(inTurn, (e: unknown) => {
      this.log.warn({ err: (e as Error).message }, "reading the data path ahead of the reconcile failed; it reads in turn");
      return inTurn(undefined);
    });
  }

  /** Resolves when everything queued so far is done. */
  idle(): Promise<void> {
    return this.tail.then(() => undefined, () => undefined);
  }

  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.tail.then(task, task);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
