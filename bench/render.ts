/**
 * `weft bench report RESULTS.json [--out DIR] [--results DOC]`
 *
 * Draws a run's report again from its results.json, without running
 * anything: report.md and the charts into DIR (default: the folder of
 * RESULTS.json), and with --results the report into DOC between its markers.
 * For a results.json copied from another machine, or after a change to the
 * report's layout. Exit status 2 for a file that cannot be read, is of
 * another schema version, or a document whose markers are broken.
 */
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { ResultsFileError } from "./report/schema.js";
import { checkDoc, loadResults, writeRun } from "./report/write.js";

function usage(why: string): never {
  console.error(`bench:report: ${why}\nusage: weft bench report RESULTS.json [--out DIR] [--results DOC]`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({ args: process.argv.slice(2), options: { out: { type: "string" }, results: { type: "string" } }, allowPositionals: true, strict: true });
} catch (e) {
  usage((e as Error).message.split("\n")[0] ?? "bad options");
}
const [file, ...extra] = parsed.positionals;
if (file === undefined || extra.length > 0) usage(`give one results.json file, got ${parsed.positionals.length}`);

try {
  const results = loadResults(file);
  if (parsed.values.results !== undefined) checkDoc(parsed.values.results);
  const w = await writeRun(results, parsed.values.out ?? dirname(file), parsed.values.results);
  console.error(`bench:report: wrote ${w.report} and ${w.charts} charts${parsed.values.results === undefined ? "" : `, and the report into ${parsed.values.results}`}`);
} catch (e) {
  if (e instanceof ResultsFileError) {
    console.error(`bench:report: ${e.message}`);
    process.exit(2);
  }
  throw e;
}
