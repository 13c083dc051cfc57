import { NotBuiltError } from "../common/errors.js";

/** The action of a subcommand that exists in the CLI's shape but is not built yet. */
export function notBuilt(command: string, what: string, issue: number): () => never {
  return () => {
    throw new NotBuiltError(`${command}: not built yet. It will ${what} (issue ${issue}; see the README's status table)`);
  };
}
