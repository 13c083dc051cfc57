import { accessSync, constants, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { writeFileAtomic } from "../../src/common/fs-atomic.js";
import { chartSpec, renderSvg } from "./charts.js";
import { embedReport, relink } from "./embed.js";
import { renderReport } from "./report.js";
import { checkResults, ResultsFileError, type Results } from "./schema.js";

/**
 * Writing a run's files: results.json, one chart per benchmark and
 * report.md into a directory, and optionally the report into a document
 * (bench/RESULTS.md) between its markers. Used by `weft bench all` after a
 * run and by `weft bench report` on a results.json already written.
 */

export interface Written {
  readonly report: string;
  readonly charts: number;
}

export async function writeRun(results: Results, outDir: string, doc?: string): Promise<Written> {
  // A name becomes a file name: a results.json from elsewhere must not write outside `out`.
  for (const run of results.runs) {
    if (!/^[a-z0-9-]+$/.test(run.bench)) throw new ResultsFileError(`a run named ${JSON.stringify(String(run.bench).slice(0, 40))}: benchmark names are lower-case letters, digits and dashes`);
  }
  const out = resolve(outDir);
  mkdirSync(join(out, "charts"), { recursive: true });
  writeFileSync(join(out, "results.json"), `${JSON.stringify(results, null, 1)}\n`);
  const charts = new Map<string, string>();
  for (const run of results.runs) {
    const spec = chartSpec(run);
    if (!spec) continue;
    writeFileSync(join(out, "charts", `${run.bench}.svg`), await renderSvg(spec));
    charts.set(run.bench, `charts/${run.bench}.svg`);
  }
  const report = renderReport(results, charts);
  writeFileSync(join(out, "report.md"), report);
  if (doc !== undefined) embedInto(resolve(doc), relink(report, out, resolve(doc)));
  return { report: join(out, "report.md"), charts: charts.size };
}

function readDoc(doc: string): string | undefined {
  try {
    return readFileSync(doc, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new ResultsFileError(`${doc}: cannot be read: ${(e as Error).message}`);
    return undefined;
  }
}

function embedInto(doc: string, report: string): void {
  writeFileAtomic(doc, embedReport(readDoc(doc), report, doc)); // a failed write leaves the document as it was
}

/** Before a run: the document can be read, its markers are whole, and its folder can be written. */
export function checkDoc(doc: string): void {
  const path = resolve(doc);
  embedReport(readDoc(path), "", path);
  try {
    accessSync(dirname(path), constants.W_OK);
  } catch (e) {
    throw new ResultsFileError(`${doc}: its folder cannot be written: ${(e as Error).message}`);
  }
}

/** A results.json read and checked; ResultsFileError says what is wrong. */
export function loadResults(path: string): Results {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ResultsFileError(`${path}: cannot be read: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ResultsFileError(`${path}: not JSON: ${(e as Error).message}`);
  }
  return checkResults(doc, path);
}
