import { END, deleteFrameOf, idEnd } from "./frames.js";
import { isOpen, labelsMatch, labelsOf, nameMatches, type Filter } from "./filter.js";
import type { ReplayEntry } from "./replay.js";

/** What one run of changes is for one filter: the bytes, how many events, and the last id written. */
export interface Rendered {
  readonly bytes: Buffer;
  readonly events: number;
  /** The revision of the last `id:` line (undefined when no event passed). */
  readonly lastId: string | undefined;
}

/**
 * The bytes a subscriber with `filter` gets for `entries` (in revision
 * order): each passing change's frame, ended by `id: <revision>` on the last
 * one of its revision and by a blank line otherwise. With label selectors, a
 * put that takes an entry out of the selection is sent as a delete, and a
 * delete is sent only when the entry was in the selection.
 */
export function render(entries: readonly ReplayEntry[], filter: Filter): Rendered | undefined {
  const open = isOpen(filter);
  const picked: { frame: Buffer; rev: string }[] = [];
  for (const e of entries) {
    const c = e.change;
    if (!open) {
      if (!nameMatches(filter, c.namespace, c.name)) continue;
      if (filter.labels.length > 0) {
        const before = labelsMatch(filter, e.prevLabels);
        const now = c.op === "put" && labelsMatch(filter, labelsOf(c.value));
        if (!now) {
          if (before) picked.push({ frame: deleteFrameOf(c, e.rev), rev: e.rev });
          continue;
        }
      }
    }
    picked.push({ frame: e.frame, rev: e.rev });
  }
  if (picked.length === 0) return undefined;
  const parts: Buffer[] = [];
  for (let i = 0; i < picked.length; i++) {
    const p = picked[i]!;
    parts.push(p.frame, picked[i + 1]?.rev === p.rev ? END : idEnd(p.rev));
  }
  return { bytes: Buffer.concat(parts), events: picked.length, lastId: picked[picked.length - 1]!.rev };
}

