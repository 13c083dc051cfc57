import type { Command } from "commander";
import { NotBuiltError } from "../../common/errors.js";
import { capabilityTable } from "../capabilities.js";

export function registerStatus(program: Command): void {
  program
    .command("status")
    .description("ask the running agent for subnet, backend, peers and counters; --capabilities: what weft can do today")
    .option("--capabilities", "print the capability status table and exit")
    .action((opts: { capabilities?: boolean }) => {
      if (opts.capabilities) {
        console.log(capabilityTable());
        return;
      }
      throw new NotBuiltError("status: not built yet. It will ask the running agent over its local socket (issue 3); `weft status --capabilities` prints what is built");
    });
}
