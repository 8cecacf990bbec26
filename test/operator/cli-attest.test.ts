// `sovereign attest` as an auditor runs it: the CLI binary spawned on evidence files, no cluster.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import test from "ava";
import type { Verdict } from "../../attestation/mod.ts";
import { attestCommand, mintTestbedEvidence, writeEvidenceSet } from "../../attestation/testbed/mod.ts";
import { NONCE_931D, VECTORS, vectorDir, vectorTest } from "../attestation/vectors.ts";

const cli = resolve(import.meta.dirname, "../../operator/cli.ts");
const AT = "2026-11-24T10:00:00Z";
const NONCE = "a11ce".padEnd(64, "0");

function sovereign(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", fail);
    child.on("close", (code) => done({ code: code ?? -1, stdout, stderr }));
  });
}

/** The same command in-process: for the small usage cases, where a spawn each would cost a second. */
async function inProcess(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await attestCommand(args, {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
  });
  return { code, stdout, stderr };
}

async function tempDir(t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "sovereign-attest-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Replaces the value after `flag` in an argument list (the sets carry the testbed trust by default). */
const withFlag = (args: string[], flag: string, value: string): string[] =>
  args.map((a, i) => (args[i - 1] === flag ? value : a));

test("mint-testbed writes a set that verify passes with --trust testbed and refuses by default", async (t) => {
  const dir = await tempDir(t);
  const minted = await sovereign(["attest", "mint-testbed", "--out", dir, "--nonce", NONCE, "--at", AT]);
  t.is(minted.code, 0, minted.stderr);
  const { verify } = JSON.parse(minted.stdout) as { verify: string[] };
  const manifest = JSON.parse(await readFile(join(dir, "evidence.json"), "utf8"));
  t.deepEqual(manifest.verify, verify);
  t.is(manifest.nonce, NONCE);
  const args = verify.slice(1);
  const passed = await sovereign(args);
  t.is(passed.code, 0, passed.stderr);
  const verdict = JSON.parse(passed.stdout) as Verdict;
  t.true(verdict.passed);
  t.is(verdict.nonce, NONCE);
  t.is(verdict.evaluatedAt, new Date(AT).toISOString());
  t.regex(passed.stderr, /trusting the testbed roots/);
  // The production default (NVIDIA's roots) needs NVIDIA's root files, and refuses the testbed's as such.
  const noRoots = await inProcess(withFlag(args, "--trust", "nvidia").slice(1));
  t.is(noRoots.code, 2);
  t.regex(noRoots.stderr, /--trust nvidia needs NVIDIA's roots/);
  const impostor = await sovereign([
    ...withFlag(args, "--trust", "nvidia"),
    "--device-root",
    join(dir, "testbed-device-root.pem"),
    "--rim-root",
    join(dir, "testbed-rim-root.pem"),
  ]);
  t.is(impostor.code, 2);
  t.regex(impostor.stderr, /NVIDIA's is 102bf659/);
  t.is(impostor.stdout, "", "no verdict is printed for a usage error");
});

vectorTest("a testbed set is refused under NVIDIA's pinned roots with the chain reasons", async (t) => {
  const dir = await tempDir(t);
  const set = await writeEvidenceSet(await mintTestbedEvidence({ nonce: NONCE, at: AT }), dir);
  const result = await sovereign([
    "attest",
    "verify",
    ...withFlag(set.verifyArgs, "--trust", "nvidia"),
    "--device-root",
    join(VECTORS, "nvtrust/roots/verifier_device_root.pem"),
    "--rim-root",
    join(VECTORS, "nvtrust/roots/verifier_RIM_root.pem"),
  ]);
  t.is(result.code, 1, result.stderr);
  const verdict = JSON.parse(result.stdout) as Verdict;
  t.false(verdict.passed);
  t.true(verdict.reasons.includes("CertChainInvalid"));
  t.true(verdict.reasons.includes("RimChainInvalid"));
  t.regex(result.stderr, /REFUSED .*CertChainInvalid/);
});

test("a faulty set is refused with exit 1 and the fault's reason", async (t) => {
  const dir = await tempDir(t);
  const set = await writeEvidenceSet(
    await mintTestbedEvidence({ nonce: NONCE, at: AT, tamper: ["revoked", "stale"] }),
    dir,
  );
  const result = await sovereign(["attest", "verify", ...set.verifyArgs]);
  t.is(result.code, 1, result.stderr);
  const verdict = JSON.parse(result.stdout) as Verdict;
  t.deepEqual(verdict.reasons, ["CertRevoked", "EvidenceStale"]);
  // Replayed against another challenge, the same files fail on the nonce too.
  const replay = await inProcess(["verify", ...withFlag(set.verifyArgs, "--nonce", "00".repeat(32))]);
  t.is(replay.code, 1);
  t.true((JSON.parse(replay.stdout) as Verdict).reasons.includes("NonceMismatch"));
});

vectorTest(
  "NVIDIA's SET A verifies at the provenance's pinned times, up to the documented OCSP windows",
  async (t) => {
    const dir = await tempDir(t);
    const policy = join(dir, "policy.yaml");
    // The stored OCSP answers were cached without a nonce (PROVENANCE), so nonces cannot be required.
    await writeFile(
      policy,
      'apiVersion: sovereign.ai/v1alpha1\nkind: AttestationPolicy\nmetadata: {name: audit}\nspec:\n  gpuArchitectures: [Hopper]\n  ccMode: "On"\n  ocsp: {policy: RequireGood, requireNonce: false}\n',
    );
    const v = (file: string) => join(VECTORS, file);
    const base = [
      "attest",
      "verify",
      "--report",
      v("nvtrust/gpu-h100-550.90.07/hopperAttestationReport.txt"),
      "--chain",
      v("nvtrust/gpu-h100-550.90.07/hopperCertChain.txt"),
      "--rim",
      v("go-nvattest-tools/rim/NV_GPU_DRIVER_GH100_550.90.07.xml"),
      "--rim",
      v("go-nvattest-tools/rim/NV_GPU_VBIOS_1010_0200_882_96009F0001.xml"),
      ...vectorDir("go-nvattest-tools/ocsp").flatMap((f) => ["--ocsp", v(`go-nvattest-tools/ocsp/${f}`)]),
      "--nonce",
      NONCE_931D,
      "--policy",
      policy,
      "--device-root",
      v("nvtrust/roots/verifier_device_root.pem"),
      "--rim-root",
      v("nvtrust/roots/verifier_RIM_root.pem"),
    ];
    // T1: report, chain, FWID, both RIMs, 32 measurements and the device-chain OCSP answers all hold;
    // the RIM-chain answers are only issued two months later.
    const t1 = await sovereign([...base, "--at", "2025-08-21T12:00:00Z"]);
    t.is(t1.code, 1, t1.stderr);
    const verdict = JSON.parse(t1.stdout) as Verdict;
    t.deepEqual(verdict.reasons, ["OcspStale"]);
    const subjects = verdict.devices.flatMap((d) => d.failures.map((f) => f.subject));
    t.true(subjects.length > 0 && subjects.every((s) => s.startsWith("rim:")), subjects.join(", "));
    t.is(verdict.devices[0]?.driverVersion, "550.90.07");
    t.is(verdict.devices[0]?.vbiosVersion, "96.00.9F.00.01");
  },
);

test("usage errors exit 2 with a message that says what is wrong", async (t) => {
  const dir = await tempDir(t);
  const none = await sovereign(["attest"]);
  t.is(none.code, 2);
  t.regex(none.stderr, /missing subcommand[\s\S]*usage:/);
  // The rest in-process: the exit code's path through the binary is the one above.
  const unknown = await inProcess(["verify", "--reprot", "x"]);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /reprot/);
  const policy = join(dir, "bad.yaml");
  // Bare On is YAML 1.1's true, as kubectl would read it.
  await writeFile(policy, "spec:\n  ccMode: On\n  maxEvidenceAgeSeconds: 10\n");
  const base = ["verify", "--report", join(dir, "missing.hex"), "--chain", join(dir, "c.pem")];
  const badNonce = await inProcess([...base, "--nonce", "abc", "--policy", policy]);
  t.is(badNonce.code, 2);
  t.regex(badNonce.stderr, /--nonce must be hex/);
  const badPolicy = await inProcess([...base, "--nonce", NONCE, "--policy", policy]);
  t.is(badPolicy.code, 2);
  t.regex(badPolicy.stderr, /spec\.ccMode/);
  t.regex(badPolicy.stderr, /spec\.maxEvidenceAgeSeconds/);
  await writeFile(policy, 'spec: {ccMode: "On"}\n');
  const missing = await inProcess([...base, "--nonce", NONCE, "--policy", policy, "--trust", "testbed"]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /cannot read --report .*missing\.hex: ENOENT/);
  const badFault = await inProcess(["mint-testbed", "--out", dir, "--nonce", NONCE, "--fault", "melted"]);
  t.is(badFault.code, 2);
  t.regex(badFault.stderr, /--fault "melted" is not one of wrong-nonce/);
});
