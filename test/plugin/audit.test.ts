// The regulator's path end to end: a real hub operator process writing its audit log, the
// plugin exporting it (directly, and through the hub API server's service proxy), and the
// offline verifier passing the export and failing a tampered copy.
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import test from "ava";
import { installCrds } from "../../crds/install.ts";
import { auditExportCommand, auditVerifyCommand } from "../../plugin/audit.ts";
import type { PluginError } from "../../plugin/errors.ts";
import { startOperator } from "../operator/operator-process.ts";
import { eventually, testNamespace, uniqueName, useTestbed } from "../testbed/harness.ts";

let dir = "";
let keyFile = "";
let publicKeyFile = "";
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "kubectl-sovereign-audit-"));
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  keyFile = join(dir, "audit-key.pem");
  publicKeyFile = join(dir, "audit-public.pem");
  await writeFile(keyFile, privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });
  await writeFile(publicKeyFile, publicKey.export({ format: "pem", type: "spki" }));
});
test.after.always(() => rm(dir, { recursive: true, force: true }));

function verifyIo() {
  let out = "";
  let err = "";
  return {
    io: {
      stdout: (t: string) => {
        out += t;
      },
      stderr: (t: string) => {
        err += t;
      },
      now: () => new Date(),
    },
    out: () => out,
    err: () => err,
  };
}

test("audit export from a running operator, verify passes it and fails a tampered copy", async (t) => {
  const tb = await useTestbed();
  const admin = tb.kubeConfig("hub");
  await installCrds(admin);
  const ns = await testNamespace(t, tb, "hub", "plug-audit");
  const { child, lines } = startOperator([
    "--mode=hub",
    `--kubeconfig=${tb.cluster("hub").kubeconfig}`,
    `--namespace=${ns}`,
    `--watch-namespace=${ns}`,
    `--region-selector=sovereign.ai/test-fleet=${uniqueName("none")}`,
    "--leader-elect=false",
    "--metrics-bind-address=127.0.0.1:0",
    "--health-probe-bind-address=127.0.0.1:0",
    `--audit-log=${join(dir, "hub-audit.jsonl")}`,
    `--audit-key=${keyFile}`,
  ]);
  t.teardown(() => {
    child.kill("SIGKILL");
  });
  const serving = await eventually(
    () => lines.map((l) => /"serving probes and metrics".*"metrics":(\d+)/.exec(l)?.[1]).find(Boolean),
    "the operator to serve its metrics port",
  );
  const port = Number(serving);

  // Directly, as after kubectl port-forward.
  const exported = join(dir, "export.jsonl");
  let said = "";
  const code = await auditExportCommand(
    [],
    { url: `http://127.0.0.1:${port}`, file: exported },
    {
      stdout: new PassThrough(),
      stderr: (text) => {
        said += text;
      },
    },
  );
  t.is(code, 0);
  t.regex(
    said,
    new RegExp(
      `^wrote (\\d+) audit entries \\(\\d+ bytes\\) from http://127.0.0.1:${port} to ${exported}\\n`,
    ),
  );
  const text = await readFile(exported, "utf8");
  t.regex(text.split("\n")[0] ?? "", /"kind":"LogOpened"/);

  const intact = verifyIo();
  t.is(await auditVerifyCommand([exported], { keys: publicKeyFile }, intact.io), 0, intact.err());
  t.regex(intact.out(), /^audit log "hub": \d+ entries verified/);
  t.regex(intact.out(), /\nINTACT/);
  const tampered = join(dir, "tampered.jsonl");
  await writeFile(tampered, text.replace("sovereign-hub/", "sovereign-hux/"));
  const broken = verifyIo();
  t.is(await auditVerifyCommand([tampered], { keys: publicKeyFile, output: "json" }, broken.io), 1);
  t.is(JSON.parse(broken.out()).failure.reason, "AuditHashMismatch");
  t.regex(broken.err(), /^AuditHashMismatch at line 1/);

  // Through the hub API server's service proxy: the request is made and authenticated there,
  // and a missing Service comes back as a reason. (Proxying to this process itself is not
  // tested: this testbed's API server answers "no endpoints available" for a selectorless
  // Service with hand-written Endpoints, so it would need the operator running in a pod.)
  const absent = await auditExportCommand(
    [],
    { namespace: ns, service: "no-such-service" },
    { stdout: new PassThrough(), stderr: () => {} },
    admin,
  ).catch((e: unknown) => e);
  t.is((absent as PluginError).reason, "OperatorNotFound");
});

test("audit export refuses what it cannot use, with reasons", async (t) => {
  const io = { stdout: new PassThrough(), stderr: () => {} };
  const reason = (p: Promise<unknown>) =>
    p.then(
      () => "ok",
      (e: unknown) => (e as PluginError).reason,
    );
  t.is(await reason(auditExportCommand([], { url: "not a url" }, io)), "InvalidArguments");
  t.is(await reason(auditExportCommand([], { url: "ftp://x" }, io)), "InvalidArguments");
  t.is(
    await reason(auditExportCommand([], { url: "http://127.0.0.1:1", service: "x" }, io)),
    "InvalidArguments",
  );
  t.is(await reason(auditExportCommand(["extra"], {}, io)), "InvalidArguments");
  t.is(await reason(auditExportCommand([], { url: "http://127.0.0.1:1" }, io)), "OperatorUnreachable");
  t.is(
    await reason(auditExportCommand([], { service: "Bad_Name", kubeconfig: "/nonexistent" }, io)),
    "InvalidArguments",
  );
  // An operator started without --audit-log says so, and the plugin passes its reason on.
  const { createServer } = await import("node:http");
  const { startProbeServer } = await import("../../operator/runtime/server.ts");
  const { OperatorMetrics } = await import("../../operator/runtime/metrics.ts");
  const probe = await startProbeServer({
    host: "127.0.0.1",
    port: 0,
    metrics: new OperatorMetrics(),
    healthz: {},
    readyz: {},
  });
  t.teardown(() => probe.close());
  t.is(
    await reason(auditExportCommand([], { url: `http://127.0.0.1:${probe.port}` }, io)),
    "AuditLogNotConfigured",
  );
  // A log cut off mid-transfer is an error, and no file is left behind.
  const cut = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/jsonl" });
    res.write('{"apiVersion":"sovereign.ai/audit/v1"');
    setTimeout(() => res.destroy(), 50);
  });
  await new Promise<void>((r) => cut.listen(0, "127.0.0.1", () => r()));
  t.teardown(() => cut.close());
  const cutPort = (cut.address() as { port: number }).port;
  const target = join(dir, "cut.jsonl");
  t.is(
    await reason(auditExportCommand([], { url: `http://127.0.0.1:${cutPort}`, file: target }, io)),
    "AuditExportIncomplete",
  );
  await t.throwsAsync(readFile(target), { code: "ENOENT" });
});
