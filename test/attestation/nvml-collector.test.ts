// The agent's NVIDIA evidence collector (attestation/agent/nvml-collector.ts + nvml_collector.py).
// There is no GPU here, so what is tested is what can be: the real program on this machine fails
// with the reason a node without NVIDIA's stack gets, and the agent answers that over HTTP; the
// runner's limits; the parser of the program's output against garbage and a property test; real
// NVIDIA vectors, put in the program's output, verify exactly as when loaded directly; and the real
// program's success and GPU-failure paths driven by a stand-in pynvml (test/attestation/nvml-fake,
// clearly not NVML). Nothing here talks to a GPU.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test, { type ExecutionContext } from "ava";
import fc from "fast-check";
import {
  AGENT_API_VERSION,
  agentHandler,
  EVIDENCE_PATH,
  MAX_CHAIN_BYTES,
  MAX_COLLECTOR_OUTPUT_BYTES,
  MAX_DEVICES,
  MAX_REPORT_BYTES,
  NVML_COLLECTOR_API_VERSION,
  NVML_COLLECTOR_CODES,
  NVML_COLLECTOR_SCRIPT,
  type NvmlCollectorCode,
  NvmlCollectorError,
  nvmlCollector,
  nvmlEvidence,
  parseNvmlCollectorOutput,
  runNvmlCollector,
} from "../../attestation/agent/mod.ts";
import { evaluatePolicy, type LocalDeviceEvidence, verifyLocalEvidence } from "../../attestation/mod.ts";
import { AgentEvidenceSource, EvidenceError } from "../../operator/member/evidence-source.ts";
import { nvVerifier } from "./nvidia-differential-venv.ts";
import {
  anchors,
  NONCE_931D,
  policy,
  VECTORS,
  vector,
  vectorBytes,
  vectorDir,
  vectorsPresent,
  vectorTest,
} from "./vectors.ts";

const run = promisify(execFile);
const FAKE_PYNVML = join(import.meta.dirname, "nvml-fake");
const REPORT = "nvtrust/gpu-h100-550.90.07/hopperAttestationReport.txt";
const CHAIN = "nvtrust/gpu-h100-550.90.07/hopperCertChain.txt";
const nonce931d = new Uint8Array(Buffer.from(NONCE_931D, "hex"));

/** Whether this machine's python3 can import pynvml (it cannot on the machines these tests were written on). */
const systemHasPynvml = run("python3", ["-c", "import pynvml"]).then(
  () => true,
  () => false,
);

async function refusal(t: ExecutionContext, p: Promise<unknown>, code: NvmlCollectorCode) {
  const err = await t.throwsAsync(p, { instanceOf: NvmlCollectorError });
  t.is(err?.code, code, err?.message);
  t.is(err?.reason, "EvidenceUnavailable");
  t.is(err?.status, 503);
  t.true(err?.message.startsWith(`EvidenceUnavailable: ${code}: `), err?.message);
  return err as NvmlCollectorError;
}

function refusedSync(t: ExecutionContext, text: string, code: NvmlCollectorCode, nonce = nonce931d) {
  const err = t.throws(() => parseNvmlCollectorOutput(text, nonce), { instanceOf: NvmlCollectorError });
  t.is(err?.code, code, `${err?.message} (input ${text.slice(0, 120)})`);
  return err as NvmlCollectorError;
}

// ---------------------------------------------------------------------------------------------
// 1. The real program on this machine.

test("on this machine the real program refuses with what is missing: nvidia-ml-py or NVML's library", async (t) => {
  const nonce = new Uint8Array(randomBytes(32));
  const expected: NvmlCollectorCode = (await systemHasPynvml) ? "NvmlLibraryNotFound" : "PynvmlMissing";
  const err = await refusal(t, runNvmlCollector(nonce), expected);
  t.regex(
    err.message,
    expected === "PynvmlMissing" ? /install nvidia-ml-py .*requirements-nvml\.txt/ : /libnvidia-ml\.so\.1/,
  );
  t.regex(err.message, /no NVIDIA evidence collector can run on this node/);
});

test("with the pinned nvidia-ml-py (12.550.52) and no NVIDIA driver, nvmlInit fails: NvmlLibraryNotFound", async (t) => {
  const oracle = await nvVerifier();
  if (!oracle.ok) {
    t.log(`skipped: ${oracle.reason}`);
    t.pass();
    return;
  }
  const { stdout } = await run(oracle.python, [
    "-c",
    "import importlib.metadata as m; print(m.version('nvidia-ml-py'))",
  ]);
  t.is(stdout.trim(), "12.550.52");
  const err = await refusal(
    t,
    runNvmlCollector(new Uint8Array(randomBytes(32)), { python: oracle.python }),
    "NvmlLibraryNotFound",
  );
  t.regex(err.message, /nvmlInit failed: NVML Shared Library Not Found; .*NVIDIA container runtime/);
});

test("the agent answers a challenge it cannot collect for with 503, EvidenceUnavailable and the code", async (t) => {
  const server: Server = createServer(agentHandler({ node: "gpu-n", collect: nvmlCollector() }));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const expected = (await systemHasPynvml) ? "NvmlLibraryNotFound" : "PynvmlMissing";

  const res = await fetch(`http://127.0.0.1:${port}${EVIDENCE_PATH}`, {
    method: "POST",
    body: JSON.stringify({ apiVersion: AGENT_API_VERSION, nonce: randomBytes(32).toString("hex"), gpus: 8 }),
  });
  t.is(res.status, 503);
  const body = (await res.json()) as { reason: string; code: string; message: string };
  t.deepEqual([body.reason, body.code], ["EvidenceUnavailable", expected]);
  t.regex(
    body.message,
    new RegExp(`^EvidenceUnavailable: ${expected}: no NVIDIA evidence collector can run`),
  );

  // The member's side: retry later (Unavailable), with the agent's words in the message.
  const err = await t.throwsAsync(
    new AgentEvidenceSource({ port }).collect({
      node: "gpu-n",
      address: "127.0.0.1",
      nonce: new Uint8Array(randomBytes(32)),
      gpus: 8,
    }),
    { instanceOf: EvidenceError },
  );
  t.is(err?.reason, "EvidenceUnavailable");
  t.regex(err?.message ?? "", new RegExp(`answered 503: .*${expected}`));
});

test("the agent's command takes --collector=nvml and --python, and refuses other flags", async (t) => {
  const main = join(import.meta.dirname, "../../attestation/agent/main.ts");
  const env = { ...process.env, NODE_NAME: "gpu-q", SOVEREIGN_ATTESTATION_AGENT_PORT: "0" };
  const bad = await run(process.execPath, [main, "--collector=dcgm"], { env }).catch((e) => e);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--collector=dcgm is not a collector/);
  const unknown = await run(process.execPath, [main, "--bogus"], { env }).catch((e) => e);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /the agent takes --collector=nvml/);

  // A python that does not exist: the agent still serves, and says what is missing.
  const child = spawn(process.execPath, [main, "--collector=nvml", "--python=/nonexistent/python3"], {
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  t.teardown(() => child.kill("SIGKILL"));
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stderr.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /"msg":"serving attestation challenges".*"port":(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on("exit", (code) => reject(new Error(`the agent exited ${code}: ${out}`)));
  });
  const res = await fetch(`http://127.0.0.1:${port}${EVIDENCE_PATH}`, {
    method: "POST",
    body: JSON.stringify({ apiVersion: AGENT_API_VERSION, nonce: randomBytes(32).toString("hex"), gpus: 1 }),
  });
  t.is(res.status, 503);
  const body = (await res.json()) as { code: string; message: string };
  t.is(body.code, "PythonNotFound");
  t.regex(body.message, /the interpreter \/nonexistent\/python3 is not found/);
});

// ---------------------------------------------------------------------------------------------
// 2. The runner's limits, with stand-in programs (they are not the collector; they misbehave on purpose).

const scratch: string[] = [];
test.after.always(() => Promise.all(scratch.map((d) => rm(d, { recursive: true, force: true }))));

async function script(body: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "nvml-collector-test-"));
  scratch.push(dir);
  const file = join(dir, "stand_in.py");
  await writeFile(file, body);
  return file;
}

test("the runner: timeout, oversized output, a crash, bytes that are not JSON, an abort", async (t) => {
  const nonce = new Uint8Array(randomBytes(32));
  const slow = await script("import time\ntime.sleep(30)\n");
  const started = Date.now();
  await refusal(t, runNvmlCollector(nonce, { script: slow, timeoutMs: 300 }), "CollectorTimeout");
  t.true(Date.now() - started < 5_000, "the program is killed at the limit");

  const flood = await script("import sys\nsys.stdout.write('x' * (5 * 1024 * 1024))\n");
  await refusal(t, runNvmlCollector(nonce, { script: flood }), "OutputTooLarge");
  t.is(MAX_COLLECTOR_OUTPUT_BYTES, 4 * 1024 * 1024);

  const crash = await script("import sys\nsys.stderr.write('Traceback: boom\\n')\nsys.exit(1)\n");
  const crashed = await refusal(t, runNvmlCollector(nonce, { script: crash }), "CollectorFailed");
  t.regex(crashed.message, /exited 1: Traceback: boom/);

  const binary = await script("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe')\n");
  await refusal(t, runNvmlCollector(nonce, { script: binary }), "OutputNotJson");

  // Evidence with the error exit status is not evidence.
  const doc = JSON.stringify(validDoc(Buffer.from(nonce).toString("hex")));
  const liar = await script(`import sys\nsys.stdout.write(${JSON.stringify(doc)})\nsys.exit(3)\n`);
  await refusal(t, runNvmlCollector(nonce, { script: liar }), "OutputMalformed");

  const controller = new AbortController();
  const aborted = runNvmlCollector(nonce, { script: slow, signal: controller.signal });
  setTimeout(() => controller.abort(), 100);
  await refusal(t, aborted, "CollectorTimeout");

  await refusal(t, runNvmlCollector(nonce, { python: "/nonexistent/python3" }), "PythonNotFound");
});

test("collections run one at a time", async (t) => {
  const markerDir = await mkdtemp(join(tmpdir(), "nvml-serial-"));
  scratch.push(markerDir);
  const marker = join(markerDir, "running");
  const doc = (hex: string) => JSON.stringify(validDoc(hex));
  // Fails if another copy is running, which would mean two collections overlap.
  const body = `import os, sys, time
m = ${JSON.stringify(marker)}
if os.path.exists(m): sys.exit(9)
open(m, "w").close()
time.sleep(0.3)
os.remove(m)
print(${JSON.stringify(doc("NONCE"))}.replace("NONCE", sys.argv[1]))
`;
  const collect = nvmlCollector({ script: await script(body) });
  const signal = AbortSignal.timeout(20_000);
  const nonces = [1, 2, 3].map(() => new Uint8Array(randomBytes(32)));
  const results = await Promise.all(nonces.map((nonce) => collect({ nonce, gpus: 1, signal })));
  t.is(results.length, 3);
  for (const devices of results) t.is(devices.length, 1);
});

// ---------------------------------------------------------------------------------------------
// 3. The parser.

const SAMPLE_CHAIN = vectorsPresent
  ? vector(CHAIN)
  : "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";

// biome-ignore lint/suspicious/noExplicitAny: the tests bend the document into every wrong shape.
type Loose = any;

function validDoc(nonceHex: string, gpus = 1, chain = SAMPLE_CHAIN): Record<string, unknown> {
  return {
    apiVersion: NVML_COLLECTOR_API_VERSION,
    nonce: nonceHex,
    driverVersion: "550.90.07",
    confidentialCompute: {
      environment: 2,
      ccFeature: 1,
      devToolsMode: 0,
      multiGpuMode: 0,
      gpusReadyState: 0,
    },
    gpus: Array.from({ length: gpus }, (_, i) => ({
      index: i,
      uuid: `GPU-${i.toString(16).padStart(8, "0")}-1111-2222-3333-444444444444`,
      attestationReport: "11e001ff".padEnd(200, "ab"),
      certificateChain: chain,
    })),
  };
}

const mutate = (f: (d: Record<string, Loose>) => void): string => {
  const d = validDoc(NONCE_931D) as Record<string, Loose>;
  f(d);
  return JSON.stringify(d);
};

test("the parser refuses garbage, each with its code", (t) => {
  t.notThrows(() =>
    parseNvmlCollectorOutput(
      mutate(() => {}),
      nonce931d,
    ),
  );
  const cases: [string, NvmlCollectorCode][] = [
    ["", "OutputNotJson"],
    ["{", "OutputNotJson"],
    ["null", "OutputMalformed"],
    ["[]", "OutputMalformed"],
    ['"evidence"', "OutputMalformed"],
    [mutate((d) => (d.apiVersion = "sovereign.ai/nvml-collector/v2")), "OutputMalformed"],
    [mutate((d) => (d.extra = 1)), "OutputMalformed"],
    [mutate((d) => delete d.driverVersion), "OutputMalformed"],
    [mutate((d) => (d.driverVersion = "550.90.07; rm -rf /")), "OutputMalformed"],
    [mutate((d) => (d.nonce = "00".repeat(32))), "NonceNotEchoed"],
    [mutate((d) => (d.confidentialCompute.ccFeature = "1")), "OutputMalformed"],
    [mutate((d) => (d.confidentialCompute.multiGpuMode = -1)), "OutputMalformed"],
    [mutate((d) => delete d.confidentialCompute.gpusReadyState), "OutputMalformed"],
    [mutate((d) => (d.confidentialCompute.ccFeature = 0)), "CcOff"],
    [mutate((d) => (d.gpus = {})), "OutputMalformed"],
    [mutate((d) => (d.gpus = [])), "GpuCountInvalid"],
    [
      mutate((d) => (d.gpus = (validDoc(NONCE_931D, MAX_DEVICES + 1) as Record<string, Loose>).gpus)),
      "GpuCountInvalid",
    ],
    [mutate((d) => (d.gpus[0].index = 1)), "OutputMalformed"],
    [mutate((d) => (d.gpus[0].extra = true)), "OutputMalformed"],
    [mutate((d) => (d.gpus[0].uuid = "GPU-not-a-uuid")), "OutputMalformed"],
    [mutate((d) => (d.gpus = [d.gpus[0], { ...d.gpus[0], index: 1 }])), "OutputMalformed"],
    [mutate((d) => (d.gpus[0].attestationReport = "")), "ReportNotHex"],
    [mutate((d) => (d.gpus[0].attestationReport = "abc")), "ReportNotHex"],
    [mutate((d) => (d.gpus[0].attestationReport = "11E001FF")), "ReportNotHex"],
    [mutate((d) => (d.gpus[0].attestationReport = "zz")), "ReportNotHex"],
    [mutate((d) => (d.gpus[0].attestationReport = 42)), "ReportNotHex"],
    [mutate((d) => (d.gpus[0].attestationReport = "ab".repeat(MAX_REPORT_BYTES + 1))), "ReportTooLarge"],
    [mutate((d) => (d.gpus[0].certificateChain = "")), "CertChainNotPem"],
    [mutate((d) => (d.gpus[0].certificateChain = null)), "CertChainNotPem"],
    [mutate((d) => (d.gpus[0].certificateChain = `${SAMPLE_CHAIN}garbage`)), "CertChainNotPem"],
    [
      mutate(
        (d) => (d.gpus[0].certificateChain = "-----BEGIN CERTIFICATE-----\nMA!=\n-----END CERTIFICATE-----"),
      ),
      "CertChainNotPem",
    ],
    [
      mutate(
        (d) => (d.gpus[0].certificateChain = "-----BEGIN CERTIFICATE-----\nMAB=\n-----END CERTIFICATE-----"),
      ),
      "CertChainNotPem",
    ],
    [
      mutate(
        (d) => (d.gpus[0].certificateChain = "-----BEGIN CERTIFICATE-----\nAAA=\n-----END CERTIFICATE-----"),
      ),
      "CertChainNotPem",
    ],
    [
      mutate(
        (d) => (d.gpus[0].certificateChain = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----"),
      ),
      "CertChainNotPem",
    ],
    [
      mutate(
        (d) =>
          (d.gpus[0].certificateChain =
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".repeat(9)),
      ),
      "CertChainNotPem",
    ],
    [
      mutate((d) => (d.gpus[0].certificateChain = `${SAMPLE_CHAIN}\n`.repeat(2).padEnd(MAX_CHAIN_BYTES + 1))),
      "CertChainNotPem",
    ],
    // The program's own errors keep their code; an error document must be exactly that.
    [
      JSON.stringify({ apiVersion: NVML_COLLECTOR_API_VERSION, error: { code: "NoGpu", message: "none" } }),
      "NoGpu",
    ],
    [
      JSON.stringify({
        apiVersion: NVML_COLLECTOR_API_VERSION,
        error: { code: "GpuUnanswered", message: "lost", gpu: 3 },
      }),
      "GpuUnanswered",
    ],
    [
      JSON.stringify({ apiVersion: NVML_COLLECTOR_API_VERSION, error: { code: "Whatever", message: "x" } }),
      "OutputMalformed",
    ],
    [JSON.stringify({ apiVersion: NVML_COLLECTOR_API_VERSION, error: { code: "NoGpu" } }), "OutputMalformed"],
    [
      JSON.stringify({
        apiVersion: NVML_COLLECTOR_API_VERSION,
        error: { code: "NoGpu", message: "x", gpu: -1 },
      }),
      "OutputMalformed",
    ],
    [
      JSON.stringify({
        apiVersion: NVML_COLLECTOR_API_VERSION,
        error: { code: "NoGpu", message: "x" },
        gpus: [],
      }),
      "OutputMalformed",
    ],
    ["x".repeat(MAX_COLLECTOR_OUTPUT_BYTES + 1), "OutputTooLarge"],
  ];
  for (const [text, code] of cases) refusedSync(t, text, code);
  const lost = JSON.stringify({
    apiVersion: NVML_COLLECTOR_API_VERSION,
    error: { code: "GpuUnanswered", message: "lost", gpu: 3 },
  });
  t.is(refusedSync(t, lost, "GpuUnanswered").gpu, 3, "the failing GPU is named");
});

test("the CC mode the node states: DevTools over protected PCIe over on", (t) => {
  const mode = (cc: Record<string, number | null>) =>
    parseNvmlCollectorOutput(
      mutate((d) => Object.assign(d.confidentialCompute, cc)),
      nonce931d,
    ).declaredCcMode;
  t.is(mode({}), "on");
  t.is(mode({ devToolsMode: 1 }), "devtools");
  t.is(mode({ multiGpuMode: 1 }), "ppcie");
  t.is(mode({ multiGpuMode: 1, ccFeature: 0 }), "ppcie");
  t.is(mode({ multiGpuMode: 1, devToolsMode: 1 }), "devtools");
  t.is(mode({ multiGpuMode: null, gpusReadyState: null }), "on");
});

test("property: whatever the program prints, the parser returns evidence or refuses with a known code", (t) => {
  const codes = new Set<string>(NVML_COLLECTOR_CODES);
  const expectRefusal = (text: string) => {
    try {
      parseNvmlCollectorOutput(text, nonce931d);
      return true;
    } catch (err) {
      return err instanceof NvmlCollectorError && codes.has(err.code) && err.reason === "EvidenceUnavailable";
    }
  };
  // Arbitrary JSON and arbitrary text.
  fc.assert(
    fc.property(fc.jsonValue(), (v) => expectRefusal(JSON.stringify(v))),
    { numRuns: 500 },
  );
  fc.assert(fc.property(fc.string({ maxLength: 300 }), expectRefusal), { numRuns: 300 });

  // A valid document with one field replaced by an arbitrary JSON value of another kind is refused.
  const paths: string[][] = [
    ["apiVersion"],
    ["nonce"],
    ["driverVersion"],
    ["confidentialCompute"],
    ["confidentialCompute", "environment"],
    ["confidentialCompute", "ccFeature"],
    ["confidentialCompute", "devToolsMode"],
    ["gpus"],
    ["gpus", "0"],
    ["gpus", "0", "index"],
    ["gpus", "0", "uuid"],
    ["gpus", "0", "attestationReport"],
    ["gpus", "0", "certificateChain"],
  ];
  fc.assert(
    fc.property(fc.constantFrom(...paths), fc.jsonValue(), (path, value) => {
      const d = validDoc(NONCE_931D) as Record<string, Loose>;
      let parent = d;
      for (const k of path.slice(0, -1)) parent = parent[k];
      const key = path.at(-1) as string;
      fc.pre(JSON.stringify(parent[key]) !== JSON.stringify(value));
      // Swaps that stay valid (another whole number for a CC field) are not garbage.
      fc.pre(!(path[0] === "confidentialCompute" && path.length === 2 && Number.isSafeInteger(value)));
      parent[key] = value;
      try {
        parseNvmlCollectorOutput(JSON.stringify(d), nonce931d);
        return false;
      } catch (err) {
        return err instanceof NvmlCollectorError && codes.has(err.code);
      }
    }),
    { numRuns: 500 },
  );

  // So is a valid document with one key too many, at any level.
  fc.assert(
    fc.property(
      fc.constantFrom<string[]>([], ["confidentialCompute"], ["gpus", "0"]),
      fc.string({ minLength: 1, maxLength: 12 }),
      fc.jsonValue(),
      (path, key, value) => {
        const d = validDoc(NONCE_931D) as Record<string, Loose>;
        let parent = d;
        for (const k of path) parent = parent[k];
        fc.pre(!Object.hasOwn(parent, key) && key !== "__proto__");
        parent[key] = value;
        try {
          parseNvmlCollectorOutput(JSON.stringify(d), nonce931d);
          return false;
        } catch (err) {
          return err instanceof NvmlCollectorError && err.code === "OutputMalformed";
        }
      },
    ),
    { numRuns: 300 },
  );

  // Well-formed documents for 1..MAX_DEVICES GPUs with arbitrary reports map one to one, bytes intact.
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 256 }), { minLength: 1, maxLength: MAX_DEVICES }),
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      (reports, nonce) => {
        const d = validDoc(Buffer.from(nonce).toString("hex"), reports.length) as Record<string, Loose>;
        for (const [i, r] of reports.entries()) d.gpus[i].attestationReport = Buffer.from(r).toString("hex");
        const evidence = nvmlEvidence(parseNvmlCollectorOutput(JSON.stringify(d), nonce));
        return (
          evidence.length === reports.length &&
          evidence.every(
            (e, i) =>
              Buffer.from(e.report as Uint8Array).equals(Buffer.from(reports[i] as Uint8Array)) &&
              e.certificateChain === SAMPLE_CHAIN &&
              e.rims.length === 0 &&
              e.declaredCcMode === "on",
          )
        );
      },
    ),
    { numRuns: 100 },
  );
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// 4. Real NVIDIA evidence through the collector's output verifies as when loaded directly.

const T1 = "2025-08-21T12:00:00Z";

async function judge(devices: LocalDeviceEvidence[], at: string) {
  const facts = await verifyLocalEvidence({
    devices,
    expectedNonce: NONCE_931D,
    collectedAt: at,
    anchors: anchors(),
  });
  return { facts, verdict: evaluatePolicy(facts, policy(), { at: new Date(at) }) };
}

const rimsAndOcsp = () => ({
  rims: [
    { xml: vector("go-nvattest-tools/rim/NV_GPU_DRIVER_GH100_550.90.07.xml") },
    { xml: vector("go-nvattest-tools/rim/NV_GPU_VBIOS_1010_0200_882_96009F0001.xml") },
  ],
  ocspResponses: vectorDir("go-nvattest-tools/ocsp").map((f) => vector(`go-nvattest-tools/ocsp/${f}`)),
});

vectorTest("SET A as the program prints it verifies exactly as SET A loaded directly", async (t) => {
  const d = validDoc(NONCE_931D, 1, vector(CHAIN)) as Record<string, Loose>;
  d.gpus[0].attestationReport = vector(REPORT).trim();
  const devices = nvmlEvidence(parseNvmlCollectorOutput(JSON.stringify(d), nonce931d));
  const direct: LocalDeviceEvidence = {
    // The same report in binary (PROVENANCE: go-nvattest-tools' copy of SET A's report).
    report: vectorBytes("go-nvattest-tools/test_raw_gpu_attestation_report.dat"),
    certificateChain: vector(CHAIN),
    rims: [],
    declaredCcMode: "on",
  };
  // What NVML gives alone (no RIMs, no OCSP): identical facts, digest included, and verdict.
  const viaCollector = await judge(devices, T1);
  const loaded = await judge([direct], T1);
  t.deepEqual(viaCollector.facts, loaded.facts);
  t.deepEqual(viaCollector.verdict, loaded.verdict);
  t.false(viaCollector.verdict.passed, "without RIMs and OCSP answers, Local mode cannot pass");
  t.true(viaCollector.verdict.reasons.includes("RimNotFound"));
  t.deepEqual(
    viaCollector.facts.devices[0]?.failures.filter((f) => f.reason === "SignatureInvalid"),
    [],
  );
  t.deepEqual(
    viaCollector.facts.devices[0]?.failures.filter((f) => f.reason === "CertChainInvalid"),
    [],
  );
  t.is(viaCollector.facts.devices[0]?.architecture, "Hopper");

  // With the RIMs and OCSP answers a supplier would add, the same verdict as local.test.ts's SET A at T1.
  const withSupplies = await judge([{ ...(devices[0] as LocalDeviceEvidence), ...rimsAndOcsp() }], T1);
  const directWithSupplies = await judge([{ ...direct, ...rimsAndOcsp() }], T1);
  t.deepEqual(withSupplies.verdict, directWithSupplies.verdict);
  t.deepEqual(withSupplies.verdict.reasons, ["OcspStale"]);
});

// ---------------------------------------------------------------------------------------------
// 5. The real program, NVML replaced by test/attestation/nvml-fake/pynvml.py (not NVML).

function fakeEnv(config: Record<string, unknown>): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PYTHONPATH: FAKE_PYNVML,
    FAKE_NVML: JSON.stringify({
      report: join(VECTORS, REPORT),
      chain: join(VECTORS, CHAIN),
      ...config,
    }),
  };
}

vectorTest(
  "the real program with a stand-in pynvml: its structs read into evidence that verifies",
  async (t) => {
    t.is(NVML_COLLECTOR_SCRIPT, join(import.meta.dirname, "../../attestation/agent/nvml_collector.py"));
    // Trailing NULs after the chain, as a C buffer may hold, are not part of it.
    const collection = await runNvmlCollector(nonce931d, { env: fakeEnv({ gpus: 2, chainTrailer: "\0\0" }) });
    t.is(collection.driverVersion, "550.90.07");
    t.deepEqual(collection.confidentialCompute, {
      environment: 2,
      ccFeature: 1,
      devToolsMode: 0,
      multiGpuMode: 0,
      gpusReadyState: 0,
    });
    t.deepEqual(
      collection.gpus.map((g) => [g.index, g.uuid]),
      [
        [0, "GPU-00000000-0000-4000-8000-000000000000"],
        [1, "GPU-00000001-0000-4000-8000-000000000001"],
      ],
    );
    for (const g of collection.gpus) {
      t.true(
        Buffer.from(g.report).equals(
          Buffer.from(vectorBytes("go-nvattest-tools/test_raw_gpu_attestation_report.dat")),
        ),
      );
      t.is(g.certificateChain, vector(CHAIN));
    }
    const { verdict } = await judge(
      nvmlEvidence(collection).map((d) => ({ ...d, ...rimsAndOcsp() })),
      T1,
    );
    t.deepEqual(verdict.reasons, ["OcspStale"], "both GPUs verify as SET A does at T1");

    t.is(
      (await runNvmlCollector(nonce931d, { env: fakeEnv({ devToolsMode: 1 }) })).declaredCcMode,
      "devtools",
    );
    t.is(
      (await runNvmlCollector(nonce931d, { env: fakeEnv({ ccFeature: 0, multiGpuMode: 1 }) })).declaredCcMode,
      "ppcie",
    );
  },
);

vectorTest("the real program with a stand-in pynvml: each way NVML fails ends in its code", async (t) => {
  await refusal(t, runNvmlCollector(nonce931d, { env: fakeEnv({ ccFeature: 0 }) }), "CcOff");
  await refusal(t, runNvmlCollector(nonce931d, { env: fakeEnv({ gpus: 0 }) }), "NoGpu");
  const lost = await refusal(
    t,
    runNvmlCollector(nonce931d, { env: fakeEnv({ gpus: 4, failGpu: 2 }) }),
    "GpuUnanswered",
  );
  t.is(lost.gpu, 2);
  t.regex(lost.message, /GPU 2 did not give its evidence: GPU is lost/);
  await refusal(t, runNvmlCollector(nonce931d, { env: fakeEnv({ initError: 9 }) }), "NvmlDriverNotLoaded");
  await refusal(t, runNvmlCollector(nonce931d, { env: fakeEnv({ initError: 4 }) }), "NvmlNoPermission");
  await refusal(t, runNvmlCollector(nonce931d, { env: fakeEnv({ initError: 12 }) }), "NvmlLibraryNotFound");
  await refusal(
    t,
    runNvmlCollector(nonce931d, { env: fakeEnv({ chainTrailer: "\u00ff" }) }),
    "CertChainNotPem",
  );
  // A chain with garbage after its last certificate is PEM for Python's check, not for the parser's.
  await refusal(
    t,
    runNvmlCollector(nonce931d, { env: fakeEnv({ chainTrailer: "junk" }) }),
    "CertChainNotPem",
  );
});
