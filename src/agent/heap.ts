import { setFlagsFromString } from "node:v8";

/**
 * V8 heap settings for the agent (`--v8-heap compact`, the default), set at
 * the start of `weft agent`, before the agent allocates anything of size.
 *
 * The agent's live heap is small and steady (about 40 MB at 20,000 peers),
 * but its garbage comes in bursts: a full sync decodes, judges and programs
 * every lease, a `weft status` lists every peer. With V8's defaults the old
 * generation grows to some 250 MB before its first full collection, and
 * later up to four times the live size; the young generation grows to 2 x 16
 * MB. The agent's RSS was then 200-280 MB at 20,000 peers, of which 40 MB
 * were live. Two settings keep it near the live size:
 *
 * - `--heap-growing-percent=20`: after a full collection, the next one
 *   comes when the old generation is 20 % above what survived (the heap
 *   limit stays where V8 puts it; only the growth between collections is
 *   smaller). Collections are more frequent; they mark concurrently.
 * - `--semi-space-growth-factor=1`: the young generation keeps its initial
 *   size (2 x 1 MB) instead of growing to 2 x 16 MB. Scavenges are more
 *   frequent; each costs what survives, little in the agent.
 *
 * Both are read by V8 whenever it sizes a space, so setting them at run
 * time takes effect; they apply to the whole process (the tun backend's
 * worker threads too; their effect there is not measured). Measured with
 * `npm run bench:control -- --family 6 --nodes 20000`, three runs each,
 * alternating, with the rest of issue 17's changes: RSS 130-137 MB against
 * 162-171 MB with `--v8-heap default`; full sync (2.7-3.6 against 2.5-3.8
 * s) and change p99 (28-49 against 22-55 ms) within the machine's noise.
 * `--v8-heap default` leaves V8's own sizing.
 */
export function compactHeap(): void {
  setFlagsFromString("--heap-growing-percent=20");
  setFlagsFromString("--semi-space-growth-factor=1");
}
