// Structured JSON logs, one object per line, with the controller name as logger name
// (the same name is the field manager and the metric label).

export type Level = "debug" | "info" | "warn" | "error";
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(name: string, fields?: Record<string, unknown>): Logger;
}

export function jsonLogger(
  opts: {
    level?: Level;
    name?: string;
    fields?: Record<string, unknown>;
    write?: (line: string) => void;
  } = {},
): Logger {
  const min = order[opts.level ?? "info"];
  const write = opts.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const base = { ...(opts.name ? { logger: opts.name } : {}), ...opts.fields };
  const emit = (level: Level) => (msg: string, fields?: Record<string, unknown>) => {
    if (order[level] < min) return;
    const entry: Record<string, unknown> = { ts: new Date().toISOString(), level, msg, ...base, ...fields };
    if (entry.err instanceof Error) {
      const e = entry.err as Error & { reason?: string };
      entry.err = { name: e.name, message: e.message, ...(e.reason ? { reason: e.reason } : {}) };
    }
    write(JSON.stringify(entry));
  };
  return {
    debug: emit("debug"),
    info: emit("info"),
    warn: emit("warn"),
    error: emit("error"),
    child: (name, fields) =>
      jsonLogger({
        ...opts,
        name: opts.name ? `${opts.name}.${name}` : name,
        fields: { ...opts.fields, ...fields },
      }),
  };
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};
