// A cross-process lock on a directory name: mkdir is atomic on every local filesystem.
// A lock whose owner died (the pid in it is gone) is taken over, so a killed build or
// start never wedges the next one.
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { TestbedError } from "./errors.ts";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export async function withLock<T>(dir: string, fn: () => Promise<T>, timeoutMs = 90 * 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const owner = join(dir, "pid");
  for (;;) {
    try {
      await mkdir(dir, { recursive: false });
      await writeFile(owner, String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        await mkdir(join(dir, ".."), { recursive: true });
        continue;
      }
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const pid = Number(await readFile(owner, "utf8").catch(() => "0"));
      if (pid > 0 && !alive(pid)) {
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new TestbedError(
          "LockTimeout",
          `waited too long for ${dir} (held by pid ${pid}); if no testbed command is running, delete it.`,
        );
      }
      await sleep(250);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
