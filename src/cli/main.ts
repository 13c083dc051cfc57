import { Command, CommanderError } from "commander";
import { WeftError } from "../common/errors.js";
import { registerAgent } from "./commands/agent.js";
import { registerBench } from "./commands/bench.js";
import { registerCni } from "./commands/cni.js";
import { registerIpam } from "./commands/ipam.js";
import { registerNetwork } from "./commands/network.js";
import { registerDemo } from "./commands/demo.js";
import { registerStatus } from "./commands/status.js";
import { registerSvc } from "./commands/svc.js";

/** Exit codes: 0 ok, 1 failure, 64 usage error (EX_USAGE). */
export const EXIT_USAGE = 64;

export function buildProgram(): Command {
  const program = new Command("weft")
    .description("container-network node agent: VXLAN overlay (flannel-compatible), pod IPAM, node-local DNS")
    .version("0.1.0")
    .showHelpAfterError()
    .exitOverride();

  registerAgent(program);
  registerStatus(program);
  registerDemo(program);
  registerBench(program);
  registerNetwork(program);
  registerCni(program);
  registerIpam(program);
  registerSvc(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version are "errors" to commander with exit code 0
      return e.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (e instanceof WeftError) {
      console.error(`weft: ${e.message}`);
      return 1;
    }
    console.error(`weft: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  }
}
