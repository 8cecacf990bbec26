// The Containerfile's file steps without a container engine: parse it, and assemble each stage's
// filesystem in a directory as its COPY lines would (honouring the ignore file), running the
// stage's `npm ci` for real. Other RUN steps (apt, pip) cannot run here; what they would have made
// is reported as not replayed rather than faked. Covers the instructions our Containerfile uses,
// not the whole Dockerfile grammar (no heredocs, ARG substitution, ADD or COPY --parents).
import { execFile } from "node:child_process";
import { cp, mkdir, readdir, readFile, stat } from "node:fs/promises";
import { basename, dirname, join, posix } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

export interface Copy {
  from?: string;
  sources: string[];
  dest: string;
  line: number;
}

export interface Stage {
  index: number;
  name?: string;
  image: string;
  instructions: Instruction[];
}

/** Logical lines: continuations joined, comments and blank lines dropped (as the builder does). */
export function parseContainerfile(text: string): Stage[] {
  const instructions: Instruction[] = [];
  let pending = "";
  let start = 0;
  text.split("\n").forEach((raw, i) => {
    const trimmed = raw.trim();
    if (trimmed.startsWith("#") || (trimmed === "" && pending === "")) return;
    if (pending === "") start = i + 1;
    if (trimmed.endsWith("\\")) {
      pending += `${trimmed.slice(0, -1)} `;
      return;
    }
    const whole = (pending + trimmed).trim();
    pending = "";
    const m = /^(\S+)\s*(.*)$/s.exec(whole);
    if (m) instructions.push({ keyword: (m[1] ?? "").toUpperCase(), args: m[2] ?? "", line: start });
  });
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === "FROM") {
      const [image = "", as, name] = ins.args.split(/\s+/);
      stages.push({
        index: stages.length,
        image,
        name: as?.toUpperCase() === "AS" ? name : undefined,
        instructions: [],
      });
    } else if (stages.length === 0) {
      if (ins.keyword !== "ARG") throw new Error(`line ${ins.line}: ${ins.keyword} before FROM`);
    } else {
      stages.at(-1)?.instructions.push(ins);
    }
  }
  return stages;
}

/** The exec form (a JSON array) of ENTRYPOINT, CMD or a COPY; undefined for the shell form. */
export function execForm(args: string): string[] | undefined {
  if (!args.trim().startsWith("[")) return undefined;
  return JSON.parse(args) as string[];
}

export function parseCopy(ins: Instruction): Copy {
  const words = execForm(ins.args) ?? ins.args.split(/\s+/).filter(Boolean);
  let from: string | undefined;
  const paths: string[] = [];
  for (const w of words) {
    if (w.startsWith("--from=")) from = w.slice("--from=".length);
    else if (/^--(chown|chmod|link)/.test(w)) continue;
    else if (w.startsWith("--"))
      throw new Error(`line ${ins.line}: COPY flag ${w} is not replayed by this test`);
    else paths.push(w);
  }
  const dest = paths.pop();
  if (!dest || paths.length === 0) throw new Error(`line ${ins.line}: COPY needs a source and a destination`);
  return { from, sources: paths, dest, line: ins.line };
}

/** `key=value` pairs of LABEL or ENV, values unquoted. */
export function keyValues(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of args.matchAll(/([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
    const v = m[2] ?? "";
    out[m[1] ?? ""] = v.startsWith('"') ? (JSON.parse(v) as string) : v;
  }
  return out;
}

/** What the final stage runs as and where; inherited values of the base image are not known here. */
export function finalConfig(stages: Stage[]) {
  const last = stages.at(-1);
  if (!last) throw new Error("the Containerfile has no FROM");
  const of = (k: string) => last.instructions.filter((i) => i.keyword === k);
  let workdir = "/";
  for (const w of of("WORKDIR")) workdir = posix.resolve(workdir, w.args.trim());
  return {
    image: last.image,
    workdir,
    user: of("USER").at(-1)?.args.trim(),
    entrypoint: execForm(of("ENTRYPOINT").at(-1)?.args ?? "") ?? [],
    cmd: execForm(of("CMD").at(-1)?.args ?? "") ?? [],
    labels: Object.assign({}, ...of("LABEL").map((l) => keyValues(l.args))) as Record<string, string>,
    env: Object.assign({}, ...of("ENV").map((l) => keyValues(l.args))) as Record<string, string>,
  };
}

// .dockerignore / .containerignore, as moby/patternmatcher reads it: the last pattern that matches
// a path or one of its parent directories decides; `!` includes again; `**` spans directories.
export type IgnoreRule = { negate: boolean; re: RegExp };

export function parseIgnore(text: string): IgnoreRule[] {
  const rules: IgnoreRule[] = [];
  for (const raw of text.split("\n")) {
    let p = raw.trim();
    if (p === "" || p.startsWith("#")) continue;
    const negate = p.startsWith("!");
    if (negate) p = p.slice(1).trim();
    p = posix.normalize(p).replace(/^\/+/, "");
    let re = "";
    for (let i = 0; i < p.length; i++) {
      const c = p[i] ?? "";
      if (c === "*" && p[i + 1] === "*") {
        const slash = p[i + 2] === "/";
        re += slash ? "(?:.*/)?" : ".*";
        i += slash ? 2 : 1;
      } else if (c === "*") re += "[^/]*";
      else if (c === "?") re += "[^/]";
      else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
    rules.push({ negate, re: new RegExp(`^${re}$`) });
  }
  return rules;
}

export function ignored(rules: IgnoreRule[], relPath: string): boolean {
  const parts = relPath.split("/");
  const candidates = parts.map((_, i) => parts.slice(0, i + 1).join("/"));
  let out = false;
  for (const r of rules) if (candidates.some((c) => r.re.test(c))) out = !r.negate;
  return out;
}

export interface AssembleOptions {
  context: string;
  /** Each stage's filesystem goes to <out>/stage-<index>/. */
  out: string;
  containerfile: string;
  ignoreFile: string;
  /** Runs a stage's `npm ci` line in `dir` (the stage's WORKDIR). */
  npmCi: (dir: string, line: string) => Promise<void>;
}

export interface Assembled {
  stages: Stage[];
  /** The final stage's WORKDIR on this machine. */
  appDir: string;
  /** Steps this replay could not do, e.g. "line 30: RUN apt-get ...". */
  notReplayed: string[];
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

/** Builds every stage's files as the Containerfile would; throws naming the line that would fail. */
export async function assemble(o: AssembleOptions): Promise<Assembled> {
  const stages = parseContainerfile(await readFile(o.containerfile, "utf8"));
  const rules = parseIgnore(await readFile(o.ignoreFile, "utf8"));
  const notReplayed: string[] = [];
  const unreplayedRun = new Set<number>();
  const rootOf = (s: Stage) => join(o.out, `stage-${s.index}`);
  let appDir = "";
  for (const stage of stages) {
    const root = rootOf(stage);
    await mkdir(root, { recursive: true });
    let workdir = "/";
    for (const ins of stage.instructions) {
      const at = (p: string) => join(root, posix.resolve(workdir, p));
      if (ins.keyword === "WORKDIR") {
        workdir = posix.resolve(workdir, ins.args.trim());
        await mkdir(at("."), { recursive: true });
      } else if (ins.keyword === "RUN") {
        if (/\bnpm ci\b/.test(ins.args)) await o.npmCi(at("."), ins.args);
        else {
          unreplayedRun.add(stage.index);
          notReplayed.push(`line ${ins.line}: RUN ${ins.args.slice(0, 60)}`);
        }
      } else if (ins.keyword === "COPY") {
        const c = parseCopy(ins);
        const intoDir = c.dest.endsWith("/") || c.sources.length > 1;
        for (const src of c.sources) {
          const target = intoDir || (await isDir(at(c.dest))) ? join(at(c.dest), basename(src)) : at(c.dest);
          if (c.from === undefined) {
            await copyFromContext(o.context, rules, src, target, ins.line);
            continue;
          }
          const from = stages.find((s) => s.name === c.from || String(s.index) === c.from);
          if (!from) throw new Error(`line ${ins.line}: COPY --from=${c.from} names no earlier stage`);
          const path = join(rootOf(from), posix.resolve("/", src));
          if (!(await exists(path))) {
            if (unreplayedRun.has(from.index)) {
              notReplayed.push(`line ${ins.line}: COPY --from=${c.from} ${src} (made by a RUN not replayed)`);
              continue;
            }
            throw new Error(`line ${ins.line}: COPY --from=${c.from} ${src}: no such file in that stage`);
          }
          await mkdir(dirname(target), { recursive: true });
          // Hard links: node_modules is a few hundred MB, and nothing writes to the copy.
          await run("cp", ["-al", `${path}${(await isDir(path)) ? "/." : ""}`, target]);
        }
      }
    }
    appDir = join(root, workdir);
  }
  return { stages, appDir, notReplayed };
}

async function isDir(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

/** A context path as COPY sees it: a directory's contents (never the directory itself), ignored files left out. */
async function copyFromContext(
  context: string,
  rules: IgnoreRule[],
  src: string,
  target: string,
  line: number,
) {
  const rel = posix.normalize(src).replace(/^(\.\/)+|\/+$/g, "");
  const path = join(context, rel);
  if (!(await exists(path)) || ignored(rules, rel)) {
    throw new Error(
      `line ${line}: COPY ${src}: not in the build context (missing, or excluded by the ignore file)`,
    );
  }
  if (!(await isDir(path))) {
    await mkdir(dirname(target), { recursive: true });
    await cp(path, target);
    return;
  }
  await mkdir(target, { recursive: true });
  for (const entry of await readdir(path, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const fileRel = posix.join(rel, posix.relative(path, join(entry.parentPath, entry.name)));
    if (ignored(rules, fileRel)) continue;
    const dest = join(target, posix.relative(rel, fileRel));
    await mkdir(dirname(dest), { recursive: true });
    await cp(join(context, fileRel), dest);
  }
}
