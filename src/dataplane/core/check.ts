import * as abi from "../../../asm/abi.js";
import { CoreError, type CoreErrorCode } from "../../common/errors.js";

const CODES: Record<number, [CoreErrorCode, string]> = {
  [abi.E_INVALID]: ["WEFT_CORE_INVALID", "an argument is out of range"],
  [abi.E_NOT_FOUND]: ["WEFT_CORE_NOT_FOUND", "no such entry"],
  [abi.E_FULL]: ["WEFT_CORE_FULL", "the table is full"],
  [abi.E_NO_MEMORY]: ["WEFT_CORE_NO_MEMORY", "WebAssembly memory could not grow"],
};

/** Throws the CoreError a negative return code of a control export stands for. */
export function check(rc: number, what: string, hint?: string): void {
  if (rc >= 0) return;
  const [code, text] = CODES[rc] ?? ["WEFT_CORE_INVALID", `unknown return code ${rc}`];
  throw new CoreError(code, `${what}: ${text}`, hint === undefined ? {} : { hint });
}

