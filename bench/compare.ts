/**
 * `weft bench compare OLD.json NEW.json [--json] [--fail-on-regression]`
 *
 * Every figure of two `weft bench all` runs side by side with its change; a
 * change is significant only when each run's figure lies outside the spread
 * of the other's rounds. Exit status: 0; 1 with --fail-on-regression when a
 * significant regression is found; 2 for a file that cannot be read or of
 * another schema version.
 */
import { parseArgs } from "node:util";
import { compareResults, renderChanges } from "./report/compare.js";
import { ResultsFileError } from "./report/schema.js";
import { loadResults as load } from "./report/write.js";

function usage(why: string): never {
  console.error(`bench:compare: ${why}\nusage: weft bench compare OLD.json NEW.json [--json] [--fail-on-regression]`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({ args: process.argv.slice(2), options: { json: { type: "boolean" }, "fail-on-regression": { type: "boolean" } }, allowPositionals: true, strict: true });
} catch (e) {
  usage((e as Error).message.split("\n")[0] ?? "bad options");
}
const files = parsed.positionals;
if (files.length !== 2) usage(`give two results.json files, got ${files.length}`);


try {
  const [a, b] = [load(files[0]!), load(files[1]!)];
  const changes = compareResults(a, b);
  if (parsed.values.json) console.log(JSON.stringify({ old: files[0], new: files[1], changes }, null, 1));
  else {
    console.log(`old: ${files[0]} (${a.date}, ${a.machine.commit?.slice(0, 12) ?? "?"}, ${a.machine.cpu})`);
    console.log(`new: ${files[1]} (${b.date}, ${b.machine.commit?.slice(0, 12) ?? "?"}, ${b.machine.cpu})\n`);
    console.log(renderChanges(changes));
  }
  if (parsed.values["fail-on-regression"] && changes.some((c) => c.regression)) process.exitCode = 1;
} catch (e) {
  if (e instanceof ResultsFileError) {
    console.error(`bench:compare: ${e.message}`);
    process.exit(2);
  }
  throw e;
}
