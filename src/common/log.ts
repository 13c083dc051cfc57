import pino, { type Logger } from "pino";

export type { Logger };

/**
 * Structured logs (JSON lines on stderr). Level from WEFT_LOG_LEVEL
 * (trace, debug, info, warn, error; default info).
 */
export function createLogger(name: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    { name, level: process.env["WEFT_LOG_LEVEL"] ?? "info", base: { pid: process.pid, ...bindings } },
    pino.destination({ fd: 2, sync: true }),
  );
}

/** A logger that drops everything (library use and tests that do not care). */
export const silentLogger: Logger = pino({ level: "silent" });
