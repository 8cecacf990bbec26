// The operator image (Containerfile), checked without a container engine: this machine has none, so
// the image itself is never built here. Instead its file steps are replayed (containerfile.ts): the
// COPY lines assemble the image's /app in a temp directory, honouring the ignore file, and the npm ci
// line runs there for real. Then the chart's entry points run from that directory on the repo's
// Node 24 with the permission model allowing reads of the temp directory only, so a source directory
// the Containerfile forgets, or a devDependency the operator needs at run time, fails here.
// Not replayed: apt-get and pip (python3 and nvidia-ml-py), and anything the base image provides.
import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import test from "ava";
import { parse } from "yaml";
import { type Assembled, assemble, finalConfig, parseContainerfile, parseCopy } from "./containerfile.ts";

const repoRoot = resolve(import.meta.dirname, "..", "..");
const NODE = join(repoRoot, "node_modules", ".bin", "node");
const CONTAINERFILE = join(repoRoot, "Containerfile");
const IGNORE = join(repoRoot, ".containerignore");
const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
  version: string;
  license: string;
  engines: { node: string };
  devDependencies: Record<string, string>;
};
const stages = parseContainerfile(readFileSync(CONTAINERFILE, "utf8"));
const image = finalConfig(stages);
const templates = join(repoRoot, "charts", "sovereign", "templates");

/** The `command: [...]` of a chart template (each has one container). */
function chartCommand(template: string): string[] {
  const m = /command:\s*\[([^\]]*)\]/.exec(readFileSync(join(templates, template), "utf8"));
  if (!m) throw new Error(`${template} has no command`);
  return (m[1] ?? "").split(",").map((w) => w.trim());
}
const operatorCommand = chartCommand("deployment.yaml");
const agentCommand = chartCommand("attestation-agent.yaml");

// The image assembled once, before any test is declared (ava wants them declared synchronously):
// npm ci decides whether the run tests skip.

const scratch = await mkdtemp(join(tmpdir(), "sovereign-image-"));

const NETWORK = /E(NOTFOUND|AI_AGAIN|CONNREFUSED|CONNRESET|TIMEDOUT|NETUNREACH)|network|socket hang up/i;
let depsDir = "";
let npmSeconds = 0;

async function npmCi(dir: string, line: string): Promise<void> {
  // The Containerfile's own flags, plus the local cache first (the test's speed, not the image's).
  const flags = (/\bnpm ci\b([^&;|]*)/.exec(line)?.[1] ?? "").trim().split(/\s+/).filter(Boolean);
  const started = performance.now();
  await promisify(execFile)("npm", ["ci", ...flags, "--prefer-offline"], {
    cwd: dir,
    timeout: 240_000,
    maxBuffer: 16 << 20,
    env: { ...process.env, PATH: `${dirname(NODE)}:${process.env.PATH}` },
  });
  npmSeconds = (performance.now() - started) / 1000;
  depsDir = dir;
}

type Built = { ok: true; image: Assembled } | { ok: false; skip?: string; error?: Error };
async function build(): Promise<Built> {
  try {
    return {
      ok: true,
      image: await assemble({
        context: repoRoot,
        out: join(scratch, "image"),
        containerfile: CONTAINERFILE,
        ignoreFile: IGNORE,
        npmCi,
      }),
    };
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? "";
    if (NETWORK.test(stderr)) {
      return { ok: false, skip: `npm ci could not reach the registry: ${stderr.trim().split("\n").at(-1)}` };
    }
    return { ok: false, error: new Error(`${(err as Error).message}\n${stderr}`) };
  }
}
const built = await build();
const skip = built.ok ? undefined : built.skip;
const imageTest = skip ? test.skip : test;
const title = (what: string) => (skip ? `${what} (skipped: ${skip})` : what);
if (skip) console.warn(`image tests skipped: ${skip}`);

// Lists the files Node resolves (a package once, by its directory), so the devDependency check sees
// what was loaded, not what is installed.
const HOOK = join(scratch, "resolved-urls.mjs");
await writeFile(
  HOOK,
  `import { registerHooks } from "node:module";
const urls = new Set();
registerHooks({
  resolve(specifier, context, next) {
    const r = next(specifier, context);
    if (r.url.startsWith("file:")) urls.add(r.url.replace(/^(.*\\/node_modules\\/(?:@[^/]+\\/)?[^/]+)\\/.*$/, "$1"));
    return r;
  },
});
process.on("exit", () => process.stderr.write("\\n@@resolved " + JSON.stringify([...urls]) + "\\n"));
`,
);

test.after.always(() => rm(scratch, { recursive: true, force: true }));

test("the .containerignore and the .dockerignore are the same (podman reads one, docker the other)", async (t) => {
  t.is(await readFile(join(repoRoot, ".dockerignore"), "utf8"), await readFile(IGNORE, "utf8"));
});

test("every stage's base is the Node.js the tests run on (package.json's node devDependency)", (t) => {
  const nodeVersion = pkg.devDependencies.node ?? "";
  const engineMajor = /(\d+)/.exec(pkg.engines.node)?.[1];
  for (const s of stages) {
    const m =
      /^(?:docker\.io\/library\/)?node:(\d+)\.(\d+)\.(\d+)-[a-z]+(?:-slim)?(?:@sha256:[0-9a-f]{64})?$/.exec(
        s.image,
      );
    t.truthy(m, `stage ${s.index}: FROM ${s.image} is not node:<exact version>-<debian>[-slim][@digest]`);
    if (!m) continue;
    t.is(`${m[1]}.${m[2]}.${m[3]}`, nodeVersion, `stage ${s.index}: FROM ${s.image}`);
    t.is(m[1], engineMajor, `stage ${s.index}: engines.node is ${pkg.engines.node}`);
  }
  t.is(
    new Set(stages.map((s) => s.image)).size,
    1,
    "the stages share one base (the venv's python3 must match)",
  );
});

test("the image runs as a numeric non-root user: the chart's runAsUser", (t) => {
  const m = /^(\d+)(?::(\d+))?$/.exec(image.user ?? "");
  t.truthy(m, `USER ${image.user} is not numeric (runAsNonRoot can only check a numeric user)`);
  t.not(Number(m?.[1]), 0, "USER is root");
  t.not(Number(m?.[2] ?? 1), 0, "the group is root");
  const values = parse(readFileSync(join(repoRoot, "charts", "sovereign", "values.yaml"), "utf8"));
  t.is(values.podSecurityContext.runAsUser, Number(m?.[1]));
  t.is(values.attestationAgent.podSecurityContext.runAsUser, Number(m?.[1]));
});

test("the image's default command is the chart's, run from WORKDIR (the chart sets no workingDir)", (t) => {
  t.deepEqual([...image.entrypoint, ...image.cmd], operatorCommand);
  t.is(operatorCommand[0], "node");
  t.is(agentCommand[0], "node");
  t.true(image.workdir.startsWith("/") && image.workdir !== "/", `WORKDIR ${image.workdir}`);
  for (const t2 of ["deployment.yaml", "attestation-agent.yaml"]) {
    t.false(readFileSync(join(templates, t2), "utf8").includes("workingDir"), `${t2} sets a workingDir`);
  }
});

test("the labels carry the license and package.json's version, the chart's appVersion", (t) => {
  const chart = parse(readFileSync(join(repoRoot, "charts", "sovereign", "Chart.yaml"), "utf8"));
  t.is(image.labels["org.opencontainers.image.licenses"], pkg.license);
  t.is(image.labels["org.opencontainers.image.version"], pkg.version);
  t.is(chart.appVersion, pkg.version);
  t.truthy(image.labels["org.opencontainers.image.source"]);
});

test("npm installs production dependencies only, without install scripts, from the lockfile", (t) => {
  const runs = stages
    .flatMap((s) => s.instructions)
    .filter((i) => i.keyword === "RUN" && /\bnpm (ci|install|i)\b/.test(i.args));
  t.is(runs.length, 1);
  const line = runs[0]?.args ?? "";
  t.regex(line, /\bnpm ci\b/);
  t.regex(line, /--omit=dev\b/);
  t.regex(line, /--ignore-scripts\b/);
});

test("the agent's python3 is a venv with attestation/agent/requirements-nvml.txt, first on PATH", (t) => {
  const copies = stages.flatMap((s) => s.instructions.filter((i) => i.keyword === "COPY").map(parseCopy));
  const req = copies.find((c) => c.sources.includes("attestation/agent/requirements-nvml.txt"));
  t.truthy(req, "no stage copies requirements-nvml.txt");
  const pip = stages.flatMap((s) => s.instructions).find((i) => /\bpip install\b/.test(i.args));
  t.regex(pip?.args ?? "", new RegExp(`-r ${req?.dest ?? "?"}`));
  const venv = /python3 -m venv (\S+)/.exec(pip?.args ?? "")?.[1] ?? "?";
  t.true(
    (image.env.PATH ?? "").startsWith(`${venv}/bin:`),
    `PATH ${image.env.PATH} does not start with the venv`,
  );
  t.true(
    copies.some((c) => c.from !== undefined && c.sources.includes(venv)),
    "the runtime stage does not copy the venv",
  );
});

interface Ran {
  what: string;
  code: number;
  stdout: string;
  stderr: string;
  urls: string[];
}

/** `node <args>` from the image's WORKDIR: reads allowed under the scratch directory only, no writes. */
function runNode(appDir: string, what: string, args: string[]): Promise<Ran> {
  const flags = ["--permission", `--allow-fs-read=${scratch}`, "--import", pathToFileURL(HOOK).href];
  return new Promise((done, reject) => {
    const child = spawn(NODE, [...flags, ...args], {
      cwd: appDir,
      stdio: ["ignore", "pipe", "pipe"],
      env: { PATH: "/usr/bin:/bin", HOME: scratch, TMPDIR: scratch, NODE_ENV: "production" },
      timeout: 60_000,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => {
      const m = /\n@@resolved (.*)\n/.exec(stderr);
      if (!m)
        return reject(new Error(`${what}: the module-listing hook printed nothing: ${stderr.slice(-2000)}`));
      done({
        what,
        code: code ?? 1,
        stdout,
        stderr: stderr.replace(/\n@@resolved .*\n/, ""),
        urls: JSON.parse(m[1] ?? "[]") as string[],
      });
    });
  });
}

/** Why a run failed, in the image's terms: the file a COPY leaves out, or the package npm did not install. */
function diagnose(appDir: string, r: Ran): string {
  const rel = (p: string) => relative(appDir, p.replace(/^file:\/\//, ""));
  const missing = /Cannot find module '([^']+)' imported from (\S+)/.exec(r.stderr);
  if (missing) {
    return `${r.what}: the image lacks ${rel(missing[1] ?? "")} (imported from ${rel(missing[2] ?? "")}): COPY its directory in the Containerfile and allow it in .containerignore/.dockerignore`;
  }
  const pkgMissing = /Cannot find package '([^']+)' imported from (\S+)/.exec(r.stderr);
  if (pkgMissing) {
    const name = pkgMissing[1] ?? "";
    const dev = name in pkg.devDependencies ? " (a devDependency: npm ci --omit=dev leaves it out)" : "";
    return `${r.what}: the image lacks the package ${name}${dev}, imported from ${rel(pkgMissing[2] ?? "")}`;
  }
  if (/ERR_ACCESS_DENIED/.test(r.stderr)) {
    return `${r.what}: touches a path outside the image (or writes): ${r.stderr.split("\n").slice(-12).join("\n")}`;
  }
  return `${r.what}: exit ${r.code}: ${r.stderr.split("\n").slice(-12).join("\n")}`;
}

/** devDependencies some run loaded (installed all the same when a production dependency needs them). */
function devDependenciesLoaded(runs: Ran[]): string[] {
  const dev = Object.keys(pkg.devDependencies);
  const urls = new Set(runs.flatMap((r) => r.urls));
  return [...urls].flatMap((u) =>
    dev.filter((d) => u.endsWith(`/node_modules/${d}`)).map((d) => `${d} (${u})`),
  );
}

/** Repo-relative targets of every literal `import("…")` reachable from the entry points. */
function dynamicImports(entries: string[]): string[] {
  const seen = new Set<string>();
  const dynamic = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const src = readFileSync(join(repoRoot, file), "utf8");
    for (const m of src.matchAll(/\bfrom\s+["'](\.[^"']+)["']|import\(\s*["'](\.[^"']+)["']\s*\)/g)) {
      const target = relative(repoRoot, resolve(repoRoot, dirname(file), m[1] ?? m[2] ?? ""));
      if (m[2]) dynamic.add(target);
      visit(target);
    }
  };
  for (const e of entries) visit(e);
  return [...dynamic].sort();
}

/** The chart's and the CLI's entry points, run in the assembled image; and every on-demand import. */
async function runEntryPoints(appDir: string): Promise<Ran[]> {
  const lazy = dynamicImports([operatorCommand[1] ?? "", "operator/cli.ts", agentCommand[1] ?? ""]);
  const probe = `
import { statSync } from "node:fs";
for (const m of ${JSON.stringify(lazy.map((m) => pathToFileURL(join(appDir, m)).href))}) await import(m);
const { NVML_COLLECTOR_SCRIPT } = await import(${JSON.stringify(pathToFileURL(join(appDir, "attestation/agent/nvml-collector.ts")).href)});
statSync(NVML_COLLECTOR_SCRIPT);
console.log(${lazy.length} + " on-demand modules; collector " + NVML_COLLECTOR_SCRIPT);
`;
  const runs: [string, string[]][] = [
    ["node operator/main.ts --help", [...operatorCommand.slice(1), "--help"]],
    ["node operator/cli.ts attest", ["operator/cli.ts", "attest"]],
    ["node operator/cli.ts audit", ["operator/cli.ts", "audit"]],
    ["node attestation/agent/main.ts --no-such-flag", [...agentCommand.slice(1), "--no-such-flag"]],
    ["on-demand imports", ["--input-type=module", "-e", probe]],
  ];
  // Two at a time: each loads some 2,000 modules, and more in parallel only contend for the CPUs.
  const out: Ran[] = [];
  const next = async (): Promise<void> => {
    const r = runs.shift();
    if (!r) return;
    out.push(await runNode(appDir, r[0], r[1]));
    return next();
  };
  await Promise.all([next(), next()]);
  return out;
}

// What each run must print when the module graph loaded: usage texts, the agent's flag refusal.
const EXPECTED: Record<string, { code: number; out: RegExp }> = {
  "node operator/main.ts --help": { code: 0, out: /^usage: sovereign-operator/m },
  "node operator/cli.ts attest": { code: 2, out: /sovereign attest verify/ },
  "node operator/cli.ts audit": { code: 2, out: /sovereign audit verify/ },
  "node attestation/agent/main.ts --no-such-flag": { code: 2, out: /the agent takes --collector=nvml/ },
  "on-demand imports": { code: 0, out: /on-demand modules; collector .*nvml_collector\.py/ },
};

imageTest(
  title(
    "the assembled image runs every entry point, with production dependencies only and no path outside it",
  ),
  async (t) => {
    if (!built.ok) return t.fail(built.error?.message);
    const { appDir, notReplayed } = built.image;
    t.false(scratch.startsWith(repoRoot + sep), "the image must be assembled outside the repository");
    t.log(`npm ci (the Containerfile's flags, --prefer-offline): ${npmSeconds.toFixed(1)} s`);
    t.log(`not replayed here: ${notReplayed.join("; ")}`);
    const runs = await runEntryPoints(appDir);
    for (const r of runs) {
      const want = EXPECTED[r.what];
      t.truthy(want, r.what);
      if (r.code !== want?.code || !want.out.test(`${r.stdout}${r.stderr}`)) t.fail(diagnose(appDir, r));
    }
    const files = runs.flatMap((r) => r.urls).filter((u) => u.startsWith("file:"));
    t.true(files.length > 100, `only ${files.length} files and packages resolved: is the hook running?`);
    const appUrl = pathToFileURL(appDir).href;
    t.deepEqual(
      [...new Set(files.filter((u) => !u.startsWith(`${appUrl}/`)))],
      [],
      "modules resolved outside the image",
    );
    t.deepEqual(
      devDependenciesLoaded(runs),
      [],
      "devDependencies loaded at run time (the image installs --omit=dev)",
    );

    // The isolation itself: a module of the repository is out of reach from the image's directory.
    const outside = await runNode(appDir, "an import from the repository", [
      "--input-type=module",
      "-e",
      `await import(${JSON.stringify(pathToFileURL(join(repoRoot, "operator", "names.ts")).href)})`,
    ]);
    t.regex(
      outside.stderr,
      /ERR_ACCESS_DENIED/,
      "the permission model let the repository be read: no isolation",
    );
    const dirs = new Set(files.map((u) => relative(appDir, u.slice("file://".length)).split(sep)[0]));
    t.log(`${new Set(files).size} source files and packages, from ${[...dirs].sort().join(", ")}`);
  },
);

imageTest(
  title(
    "the checks fail on a Containerfile that leaves out a directory the operator imports, and on a devDependency",
  ),
  async (t) => {
    if (!built.ok) return t.fail(built.error?.message);
    const text = await readFile(CONTAINERFILE, "utf8");
    const line = /^COPY\s+transport\s+\S+\n/m;
    t.regex(text, line, "the Containerfile no longer copies transport/: pick another directory here");
    const broken = join(scratch, "broken");
    await mkdir(broken);
    await writeFile(join(broken, "Containerfile"), text.replace(line, ""));
    const withoutTransport = await assemble({
      context: repoRoot,
      out: broken,
      containerfile: join(broken, "Containerfile"),
      ignoreFile: IGNORE,
      npmCi: (dir) => symlink(join(depsDir, "node_modules"), join(dir, "node_modules")),
    });
    const operator = await runNode(withoutTransport.appDir, "node operator/main.ts --help", [
      ...operatorCommand.slice(1),
      "--help",
    ]);
    t.not(operator.code, 0);
    t.regex(
      diagnose(withoutTransport.appDir, operator),
      /the image lacks transport\/\S+\.ts \(imported from operator\//,
    );

    // A devDependency imported at run time is reported: typescript is installed as a dependency of a
    // dependency today (then the resolved-file check names it), and missing otherwise (then npm left it out).
    const dev = await runNode(built.image.appDir, "an import of a devDependency", [
      "--input-type=module",
      "-e",
      'await import("typescript")',
    ]);
    t.true(
      devDependenciesLoaded([dev]).some((d) => d.startsWith("typescript ")) ||
        /the package typescript \(a devDependency/.test(diagnose(built.image.appDir, dev)),
      `${dev.code} ${dev.stderr.slice(-500)}`,
    );

    // And an ignore file that keeps transport/ out of the build context fails at its COPY line.
    const ignore = await readFile(IGNORE, "utf8");
    t.regex(ignore, /^!transport$/m);
    await writeFile(join(broken, "ignore"), ignore.replace(/^!transport\n/m, ""));
    const error = await assemble({
      context: repoRoot,
      out: join(broken, "ignored"),
      containerfile: CONTAINERFILE,
      ignoreFile: join(broken, "ignore"),
      npmCi: (dir) => mkdir(join(dir, "node_modules")).then(() => undefined),
    }).catch((e: Error) => e);
    t.regex(
      String(error),
      /COPY transport: not in the build context \(missing, or excluded by the ignore file\)/,
    );
  },
);
