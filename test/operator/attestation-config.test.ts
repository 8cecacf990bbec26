// The gate's flags: what goes together, what only a member may set, and mistakes in the policy
// or trust anchors that stop the operator at start with the flag and what to do.
import { spawn } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { parseConfig } from "../../operator/config.ts";
import { useTestbed } from "../testbed/harness.ts";
import { repoRoot } from "../testbed/topology.ts";

const member = ["--mode=member", "--region=region-a", "--hub-kubeconfig=/k"];

test("the gate's flags: defaults, what goes together and what only a member may set", (t) => {
  const c = parseConfig(member, {});
  t.like(c, {
    attestationPolicyFile: "",
    trustAnchors: "",
    evidenceSource: "agent",
    attestationAgentPort: 9444,
    auditLog: "",
    auditKey: "",
  });
  const testbed = parseConfig(
    [...member, "--attestation-policy=/p.yaml", "--trust-anchors=testbed", "--evidence-source=testbed"],
    { SOVEREIGN_AUDIT_LOG: "/var/lib/sovereign/audit.jsonl" },
  );
  t.like(testbed, {
    evidenceSource: "testbed",
    trustAnchors: "testbed",
    auditLog: "/var/lib/sovereign/audit.jsonl",
  });
  const refusals: [string[], RegExp][] = [
    [[...member, "--attestation-policy=/p.yaml"], /--trust-anchors: --attestation-policy needs the roots/],
    [
      [...member, "--attestation-policy=/p.yaml", "--trust-anchors=/roots", "--evidence-source=testbed"],
      /--evidence-source: testbed evidence and the testbed trust anchors go together/,
    ],
    [
      [...member, "--attestation-policy=/p.yaml", "--trust-anchors=testbed"],
      /--evidence-source: testbed evidence and the testbed trust anchors go together/,
    ],
    [[...member, "--evidence-source=nras"], /--evidence-source: "nras" is not agent or testbed/],
    [[...member, "--attestation-agent-port=70000"], /--attestation-agent-port: "70000" is not a port/],
    [["--mode=hub", "--attestation-policy=/p.yaml"], /--attestation-policy: only applies in member mode/],
  ];
  for (const [argv, message] of refusals) t.throws(() => parseConfig(argv, {}), { message }, argv.join(" "));
});

function run(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(repoRoot, "operator", "main.ts"), ...args], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("exit", (code) => resolve({ code: code ?? -1, stderr }));
  });
}

test("a policy the registration does not name, or one the gate cannot apply, stops the member at start", async (t) => {
  const tb = await useTestbed();
  const kubeconfig = tb.cluster(tb.regions[0] as string).kubeconfig;
  const dir = await mkdtemp(join(tmpdir(), "sovereign-gate-"));
  await writeFile(
    join(dir, "region.yaml"),
    "jurisdiction: DE\nattestationPolicyRef: {name: strict}\njetStreamDomain: region-a\n",
  );
  const policy = (name: string, mode: string) =>
    `apiVersion: sovereign.ai/v1alpha1\nkind: AttestationPolicy\nmetadata: {name: ${name}}\nspec:\n  verification:\n    mode: ${mode}\n${mode === "NRAS" ? "    nras: {acceptedIssuers: [https://nras.attestation.nvidia.com], jwksUrl: https://nras.attestation.nvidia.com/.well-known/jwks.json}\n" : ""}`;
  await writeFile(join(dir, "other.yaml"), policy("lenient", "Local"));
  await writeFile(join(dir, "nras.yaml"), policy("strict", "NRAS"));
  await writeFile(join(dir, "strict.yaml"), policy("strict", "Local"));
  const base = [
    "--mode=member",
    "--region=region-a",
    `--hub-kubeconfig=${kubeconfig}`,
    `--kubeconfig=${kubeconfig}`,
    `--registration=${join(dir, "region.yaml")}`,
  ];
  const cases: [string[], RegExp][] = [
    [
      [
        `--attestation-policy=${join(dir, "other.yaml")}`,
        "--trust-anchors=testbed",
        "--evidence-source=testbed",
      ],
      /--attestation-policy: the file holds AttestationPolicy "lenient", but the registration names "strict"/,
    ],
    [
      [
        `--attestation-policy=${join(dir, "nras.yaml")}`,
        "--trust-anchors=testbed",
        "--evidence-source=testbed",
        `--nras-ca=${join(dir, "absent-ca.pem")}`,
      ],
      /--nras-ca: cannot read .*absent-ca\.pem/,
    ],
    [
      [
        `--attestation-policy=${join(dir, "strict.yaml")}`,
        "--trust-anchors=testbed",
        "--evidence-source=testbed",
        `--nras-ca=${join(dir, "region.yaml")}`,
      ],
      /--nras-ca: applies to verification.mode NRAS only/,
    ],
    [
      [
        `--attestation-policy=${join(dir, "strict.yaml")}`,
        "--trust-anchors=testbed",
        "--evidence-source=testbed",
        `--reference-ca=${join(dir, "absent-ca.pem")}`,
      ],
      /--reference-ca: cannot read .*absent-ca\.pem/,
    ],
    [
      [
        `--attestation-policy=${join(dir, "nras.yaml")}`,
        "--trust-anchors=testbed",
        "--evidence-source=testbed",
        `--reference-ca=${join(dir, "region.yaml")}`,
      ],
      /--reference-ca: applies to verification.mode Local only/,
    ],
    [
      [`--attestation-policy=${join(dir, "strict.yaml")}`, `--trust-anchors=${dir}`],
      /--trust-anchors: ENOENT: .*verifier_device_root\.pem/,
    ],
  ];
  const results = await Promise.all(cases.map(([args]) => run([...base, ...args])));
  for (const [i, [, message]] of cases.entries()) {
    t.is(results[i]?.code, 2, results[i]?.stderr);
    t.regex(results[i]?.stderr ?? "", message);
  }
});
