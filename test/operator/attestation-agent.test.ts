// The node agent's HTTP protocol end to end on loopback: the member's AgentEvidenceSource
// challenges an agent whose collector mints testbed evidence, and the answer verifies; every
// way the exchange fails ends in the reason the gate acts on (Unavailable: retry; Malformed: fail).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer, type RequestListener, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import test from "ava";
import {
  AGENT_API_VERSION,
  agentHandler,
  EVIDENCE_PATH,
  nvmlCollector,
} from "../../attestation/agent/mod.ts";
import { evaluatePolicy, verifyLocalEvidence } from "../../attestation/mod.ts";
import {
  mintTestbedEvidence,
  TESTBED_POLICY_SPEC,
  testbedTrustAnchors,
} from "../../attestation/testbed/mod.ts";
import { testbedGpuUuid } from "../../operator/member/attestation-testbed-source.ts";
import { AgentEvidenceSource, EvidenceError } from "../../operator/member/evidence-source.ts";
import { repoRoot } from "../testbed/topology.ts";

async function listen(handler: RequestListener): Promise<{ server: Server; port: number }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as AddressInfo).port };
}

const mintingAgent = (node: string) =>
  agentHandler({
    node,
    collect: ({ nonce, gpus }) =>
      Promise.all(
        Array.from({ length: gpus }, (_, i) =>
          mintTestbedEvidence({ nonce, at: new Date(), gpu: { uuid: testbedGpuUuid(node, i) } }).then(
            (m) => m.device,
          ),
        ),
      ),
  });

test("the member challenges the agent on a node and the evidence it brings back verifies", async (t) => {
  const { server, port } = await listen(mintingAgent("gpu-x"));
  t.teardown(() => server.close());
  const source = new AgentEvidenceSource({ port });
  const nonce = new Uint8Array(randomBytes(32));
  const evidence = await source.collect({ node: "gpu-x", address: "127.0.0.1", nonce, gpus: 2 });
  t.is(evidence.devices.length, 2);
  const facts = await verifyLocalEvidence({
    devices: evidence.devices,
    expectedNonce: nonce,
    collectedAt: new Date().toISOString(),
    anchors: testbedTrustAnchors(),
  });
  const verdict = evaluatePolicy(facts, TESTBED_POLICY_SPEC, { at: new Date() });
  t.deepEqual([verdict.passed, verdict.reasons], [true, []]);
  t.is(new Set(verdict.devices.map((d) => d.deviceId)).size, 2, "two distinct GPUs");

  // The agent reached is not the node's: the answer is not evidence for that node.
  const wrong = await t.throwsAsync(source.collect({ node: "gpu-y", address: "127.0.0.1", nonce, gpus: 1 }), {
    instanceOf: EvidenceError,
  });
  t.is(wrong?.reason, "EvidenceMalformed");
  t.regex(wrong?.message ?? "", /says it runs on gpu-x/);

  // What a plain client sees of a bad challenge.
  const bad = await fetch(`http://127.0.0.1:${port}${EVIDENCE_PATH}`, {
    method: "POST",
    body: JSON.stringify({ apiVersion: AGENT_API_VERSION, nonce: "abc", gpus: 1 }),
  });
  t.is(bad.status, 400);
  t.regex(((await bad.json()) as { message: string }).message, /nonce must be 64 lower-case hex digits/);
  const huge = await fetch(`http://127.0.0.1:${port}${EVIDENCE_PATH}`, {
    method: "POST",
    body: "x".repeat(10_000),
  });
  t.is(huge.status, 413);
  t.is((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
});

test("an agent that cannot collect, a node without an agent and an answer that is not evidence", async (t) => {
  const nonce = new Uint8Array(randomBytes(32));
  const nvml = await listen(agentHandler({ node: "gpu-x", collect: nvmlCollector() }));
  t.teardown(() => nvml.server.close());
  const down = await t.throwsAsync(
    new AgentEvidenceSource({ port: nvml.port }).collect({
      node: "gpu-x",
      address: "127.0.0.1",
      nonce,
      gpus: 8,
    }),
    { instanceOf: EvidenceError },
  );
  t.is(down?.reason, "EvidenceUnavailable");
  t.regex(down?.message ?? "", /answered 503: .*no NVIDIA evidence collector/);

  // Nothing listens on the port (the agent is not running on the node).
  const closed = await listen(() => undefined);
  await new Promise((r) => closed.server.close(r));
  const none = await t.throwsAsync(
    new AgentEvidenceSource({ port: closed.port, timeoutMs: 2_000 }).collect({
      node: "gpu-x",
      address: "127.0.0.1",
      nonce,
      gpus: 8,
    }),
    { instanceOf: EvidenceError },
  );
  t.is(none?.reason, "EvidenceUnavailable");
  t.regex(none?.message ?? "", /is the attestation agent running on gpu-x/);
  const noAddress = await t.throwsAsync(new AgentEvidenceSource().collect({ node: "gpu-x", nonce, gpus: 8 }));
  t.regex(noAddress?.message ?? "", /EvidenceUnavailable: node gpu-x reports no InternalIP/);

  // Something answers, but not with evidence.
  const liar = await listen((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({ apiVersion: AGENT_API_VERSION, node: "gpu-x", devices: [{ report: "!!", rims: [] }] }),
    );
  });
  t.teardown(() => liar.server.close());
  const malformed = await t.throwsAsync(
    new AgentEvidenceSource({ port: liar.port }).collect({
      node: "gpu-x",
      address: "127.0.0.1",
      nonce,
      gpus: 1,
    }),
    { instanceOf: EvidenceError },
  );
  t.is(malformed?.reason, "EvidenceMalformed");
});

test("the agent's command serves the protocol for its node and, without NVIDIA's tooling, says so", async (t) => {
  const child = spawn(process.execPath, [join(repoRoot, "attestation", "agent", "main.ts")], {
    env: { ...process.env, NODE_NAME: "gpu-z", SOVEREIGN_ATTESTATION_AGENT_PORT: "0" },
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
  t.is((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  const refused = await t.throwsAsync(
    new AgentEvidenceSource({ port }).collect({
      node: "gpu-z",
      address: "127.0.0.1",
      nonce: new Uint8Array(randomBytes(32)),
      gpus: 8,
    }),
    { instanceOf: EvidenceError },
  );
  t.is(refused?.reason, "EvidenceUnavailable");
  t.regex(refused?.message ?? "", /no NVIDIA evidence collector/);
  const exited = new Promise((r) => child.on("exit", r));
  child.kill("SIGTERM");
  t.is(await exited, 0);
  const missing = spawn(process.execPath, [join(repoRoot, "attestation", "agent", "main.ts")], {
    env: { ...process.env, NODE_NAME: "" },
    stdio: "ignore",
  });
  t.is(await new Promise((r) => missing.on("exit", r)), 2);
});
