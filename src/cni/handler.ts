import { IpamConfigError, IpamError } from "../ipam/errors.js";
import { allocateFor, checkAllocation, cmdAdd, cmdCheck, cmdDel, resultAddresses } from "./pod.js";
import { decode, isCommand, versionOf, type CniRequest, type Invocation } from "./request.js";
import { CNI_CODE, CniError, encodeResult, versionInfo, type CniResult } from "./spec.js";
import type { CniHost, CniReply } from "./types.js";

/**
 * One handler contract for both plugins: an invocation in, the plugin's
 * stdout and exit code out. Errors of every kind become the spec's error
 * JSON with the code that says what went wrong; a refusal of bad input is
 * also counted by the input it was about (weft_cni_refusals_total{reason}).
 */
export async function handleCni(host: CniHost, inv: Invocation): Promise<CniReply> {
  const started = process.hrtime.bigint();
  // A metric label: only one of the fixed commands, whatever the runtime sent.
  const sent = (inv as Partial<Invocation> | null)?.env?.["CNI_COMMAND"];
  let command = sent === undefined ? "none" : isCommand(sent) ? sent : "invalid";
  const role = inv?.role === "weft" || inv?.role === "weft-ipam" ? inv.role : "invalid";
  let outcome = "ok";
  try {
    const d = decode(inv);
    if (d.kind === "version") return { exit: 0, stdout: JSON.stringify(versionInfo(d.version)) };
    command = d.req.command;
    const out = await dispatch(host, d.req);
    return { exit: 0, stdout: out === undefined ? "" : JSON.stringify(encodeResult(out, d.req.version)) };
  } catch (e) {
    const err = asCniError(e);
    outcome = String(err.cniCode);
    if (err.input) host.ipam.metrics?.cniRefused.inc({ reason: err.input });
    if (err.cniCode === CNI_CODE.KERNEL || err.cniCode === CNI_CODE.IO_FAILURE || err.cniCode === CNI_CODE.INTERNAL) host.log.error({ command, err: err.message }, "cni: request failed");
    else host.log.info({ command, code: err.cniCode, reason: err.input, err: err.message }, "cni: request refused");
    return { exit: 1, stdout: JSON.stringify(err.toJSON(versionOf(inv?.stdin))) };
  } finally {
    host.ipam.metrics?.cniSeconds.observe({ command, plugin: role, result: outcome }, Number(process.hrtime.bigint() - started) / 1e9);
  }
}

async function dispatch(host: CniHost, req: CniRequest): Promise<CniResult | undefined> {
  const main = req.role === "weft";
  switch (req.command) {
    case "GC":
      await host.ipam.gc(req.network, req.validAttachments ?? new Set(), req.ipam.gcMinAgeSeconds * 1000);
      return undefined;
    case "STATUS":
      status(host, req, main);
      return undefined;
    case "ADD": {
      if (main) return cmdAdd(host, req);
      const g = await allocateFor(host, req, "");
      return { ...resultAddresses(g, undefined), ...(req.dns ? { dns: req.dns } : {}) };
    }
    case "DEL":
      if (main) await cmdDel(host, req);
      else await host.ipam.release(req.network, req.containerId, req.ifname, "del");
      return undefined;
    case "CHECK":
      if (main) await cmdCheck(host, req);
      else checkAllocation(host, req);
      return undefined;
  }
}

/** STATUS: 50 when an ADD could not be served now (no lease, default pool exhausted, data path not ready, state unreadable). */
function status(host: CniHost, req: CniRequest, main: boolean): void {
  const why = (main ? host.notReady() : undefined) ?? host.ipam.unavailable(req.ipam, req.ipamKey);
  if (why) throw new CniError(CNI_CODE.NOT_AVAILABLE, `weft cannot add pods now: ${why}`);
}

function asCniError(e: unknown): CniError {
  if (e instanceof CniError) return e;
  if (e instanceof IpamConfigError) return new CniError(e.cniCode, e.message, undefined, "ipam");
  if (e instanceof IpamError) return new CniError(e.cniCode, e.message);
  return new CniError(CNI_CODE.INTERNAL, `internal error: ${(e as Error)?.message ?? String(e)}`);
}
