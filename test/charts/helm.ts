// Running the testbed's pinned helm against charts/sovereign, and reading what it renders.
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { useTestbed } from "../testbed/harness.ts";
import { repoRoot } from "../testbed/topology.ts";

export const CHART = join(repoRoot, "charts", "sovereign");
export const HUB_VALUES = join(CHART, "ci", "hub-values.yaml");
export const MEMBER_VALUES = join(CHART, "ci", "member-values.yaml");

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  // biome-ignore lint/suspicious/noExplicitAny: rendered manifests of every kind
  [field: string]: any;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The pinned helm binary from the testbed's description. */
export async function helmBin(): Promise<string> {
  return join((await useTestbed()).description.binDir, "helm");
}

/** Runs a command; never throws on a non-zero exit. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...env },
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
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/**
 * helm with a private HOME for its cache and config, so parallel tests and the developer's
 * own helm settings never meet. `values` objects are written to files and passed as -f.
 */
export async function helm(args: string[], values: object[] = []): Promise<RunResult> {
  const dir = await mkdtemp(join(tmpdir(), "sovereign-helm-"));
  try {
    const files: string[] = [];
    for (const [i, v] of values.entries()) {
      const file = join(dir, `values-${i}.json`);
      await writeFile(file, JSON.stringify(v));
      files.push("-f", file);
    }
    return await run(await helmBin(), [...args, ...files], {
      HELM_CACHE_HOME: join(dir, "cache"),
      HELM_CONFIG_HOME: join(dir, "config"),
      HELM_DATA_HOME: join(dir, "data"),
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function parseManifests(text: string): K8sObject[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null && typeof o === "object");
}

/** `helm template` of the chart; throws with helm's message when it fails. */
export async function render(
  valueFiles: string[],
  values: object[] = [],
  opts: { release?: string; namespace?: string } = {},
): Promise<K8sObject[]> {
  const res = await helm(
    [
      "template",
      opts.release ?? "rel",
      CHART,
      "--namespace",
      opts.namespace ?? "sovereign-system",
      ...valueFiles.flatMap((f) => ["-f", f]),
    ],
    values,
  );
  if (res.code !== 0) throw new Error(`helm template failed:\n${res.stderr}`);
  return parseManifests(res.stdout);
}

/** The one object of this kind (and name, if given); throws if there is not exactly one. */
export function one(objects: K8sObject[], kind: string, name?: string): K8sObject {
  const hits = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (hits.length !== 1) {
    throw new Error(
      `expected one ${kind}${name ? ` ${name}` : ""}, found ${hits.length}: ${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(", ")}`,
    );
  }
  return hits[0] as K8sObject;
}

export interface Grant {
  /** "cluster" for a ClusterRole, else the Role's namespace. */
  scope: string;
  apiGroup: string;
  resource: string;
  verb: string;
  resourceNames?: string[];
}

/** Every (scope, group, resource, verb) the rendered Roles and ClusterRoles grant. */
export function grants(objects: K8sObject[], opts: { skipUnbound?: boolean } = {}): Grant[] {
  const bound = new Set(
    objects
      .filter((o) => o.kind === "RoleBinding" || o.kind === "ClusterRoleBinding")
      .map((b) => `${b.roleRef.kind}/${b.metadata.namespace ?? ""}/${b.roleRef.name}`),
  );
  const out: Grant[] = [];
  for (const role of objects.filter((o) => o.kind === "Role" || o.kind === "ClusterRole")) {
    const key = `${role.kind}/${role.kind === "Role" ? role.metadata.namespace : ""}/${role.metadata.name}`;
    if (opts.skipUnbound && !bound.has(key)) continue;
    const scope = role.kind === "ClusterRole" ? "cluster" : (role.metadata.namespace as string);
    for (const rule of role.rules ?? []) {
      for (const apiGroup of rule.apiGroups ?? [])
        for (const resource of rule.resources ?? [])
          for (const verb of rule.verbs ?? [])
            out.push({
              scope,
              apiGroup,
              resource,
              verb,
              ...(rule.resourceNames ? { resourceNames: rule.resourceNames } : {}),
            });
    }
  }
  return out;
}

export const grantKey = (g: Grant) =>
  `${g.scope} ${g.apiGroup || "core"} ${g.resource} ${g.verb}${g.resourceNames ? ` [${g.resourceNames.join(",")}]` : ""}`;
