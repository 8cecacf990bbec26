// The credential model on the real hub API server: a region's member credential reaches
// its own SovereignNode and namespace and nothing else, and cannot accept itself.
import {
  AuthenticationV1Api,
  AuthorizationV1Api,
  CustomObjectsApi,
  KubeConfig,
} from "@kubernetes/client-node";
import test from "ava";
import { installCrds } from "../../crds/install.ts";
import { issueRegionCredential, revokeRegionAccess } from "../../operator/hub/credentials.ts";
import { regionNamespace } from "../../operator/hub/region-access.ts";
import { uniqueName, useTestbed } from "../testbed/harness.ts";
import { makeNode } from "./builders.ts";

const GROUP = "sovereign.ai";
const VERSION = "v1alpha1";

/** A registration as a member would send it: the builder's node, without status or labels. */
function sovereignNode(name: string, accepted = false) {
  const { status: _status, ...node } = makeNode(name).accepted(accepted).obj();
  return { ...node, metadata: { name } };
}

async function status(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
    return { code: 200, message: "" };
  } catch (err) {
    const e = err as { code?: number; body?: string };
    let message = "";
    try {
      message = (JSON.parse(e.body ?? "{}") as { message?: string }).message ?? "";
    } catch {
      message = String(e.body);
    }
    return { code: e.code ?? 0, message };
  }
}

test("a region's hub credential reaches only its own objects and cannot accept itself", async (t) => {
  const tb = await useTestbed();
  const admin = tb.kubeConfig("hub");
  await installCrds(admin);
  const [a, b] = [uniqueName("ra"), uniqueName("rb")];
  const credA = await issueRegionCredential(admin, a, { ttlSeconds: 3600 });
  await issueRegionCredential(admin, b, { ttlSeconds: 3600 });
  const adminCustom = admin.makeApiClient(CustomObjectsApi);
  t.teardown(async () => {
    for (const r of [a, b]) {
      await adminCustom
        .deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: "sovereignnodes", name: r })
        .catch(() => undefined);
      await revokeRegionAccess(admin, r);
    }
  });

  const memberKc = new KubeConfig();
  memberKc.loadFromString(credA.kubeconfig);
  t.is(memberKc.getCurrentUser()?.token, credA.token);
  t.falsy(memberKc.getCurrentUser()?.certFile, "a token, not the admin's certificate");
  const member = memberKc.makeApiClient(CustomObjectsApi);
  const create = (body: object) =>
    member.createClusterCustomObject({ group: GROUP, version: VERSION, plural: "sovereignnodes", body });

  // Registration of its own SovereignNode, unaccepted: allowed.
  t.is((await status(create(sovereignNode(a)))).code, 200);
  // Squatting another region's name: refused by the admission policy.
  const squat = await status(create(sovereignNode(`${b}-fake`)));
  t.is(squat.code, 403);
  t.regex(squat.message, /may only register or update its own SovereignNode/);
  // Reading or changing another region's SovereignNode: refused by RBAC.
  await adminCustom.createClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: "sovereignnodes",
    body: sovereignNode(b),
  });
  const readOther = await status(
    member.getClusterCustomObject({ group: GROUP, version: VERSION, plural: "sovereignnodes", name: b }),
  );
  t.is(readOther.code, 403);
  // Accepting itself: refused by the admission policy.
  const own = (await member.getClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: "sovereignnodes",
    name: a,
  })) as ReturnType<typeof sovereignNode>;
  own.spec.accepted = true;
  const selfAccept = await status(
    member.replaceClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: "sovereignnodes",
      name: a,
      body: own,
    }),
  );
  t.is(selfAccept.code, 403);
  t.regex(selfAccept.message, /only a hub administrator may accept a region/);
  // Reporting its own status (the heartbeat): allowed.
  const heartbeat = await status(
    member.patchClusterCustomObjectStatus({
      group: GROUP,
      version: VERSION,
      plural: "sovereignnodes",
      name: a,
      body: [
        {
          op: "add",
          path: "/status",
          value: { lastHeartbeatTime: new Date().toISOString().replace(/\.\d+Z$/, "Z") },
        },
      ],
    }),
  );
  t.is(heartbeat.code, 200, heartbeat.message);
  // FederatedRuns are the hub's: a member can neither list nor change them.
  const runs = await status(
    member.listClusterCustomObject({ group: GROUP, version: VERSION, plural: "federatedruns" }),
  );
  t.is(runs.code, 403);

  // Its work namespace is readable, another region's is not.
  const can = async (namespace: string, verb: string, resource: string, subresource?: string) => {
    const review = await memberKc.makeApiClient(AuthorizationV1Api).createSelfSubjectAccessReview({
      body: { spec: { resourceAttributes: { group: GROUP, resource, subresource, verb, namespace } } },
    });
    return review.status?.allowed ?? false;
  };
  t.true(await can(regionNamespace(a), "list", "regionworks"));
  t.true(await can(regionNamespace(a), "update", "regionworks", "status"), "and it reports on its work");
  t.false(await can(regionNamespace(b), "list", "regionworks"));
  t.false(await can(regionNamespace(a), "update", "regionworks"), "work is written by the hub only");
  t.false(await can("default", "list", "federatedruns"));

  // The hub administrator accepts the region.
  const accepted = (await adminCustom.getClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: "sovereignnodes",
    name: a,
  })) as ReturnType<typeof sovereignNode>;
  accepted.spec.accepted = true;
  t.is(
    (
      await status(
        adminCustom.replaceClusterCustomObject({
          group: GROUP,
          version: VERSION,
          plural: "sovereignnodes",
          name: a,
          body: accepted,
        }),
      )
    ).code,
    200,
  );
});

test("the admin command prints a kubeconfig that authenticates as the region's member", async (t) => {
  const tb = await useTestbed();
  const admin = tb.kubeConfig("hub");
  await installCrds(admin);
  const region = uniqueName("rc");
  t.teardown(async () => {
    await revokeRegionAccess(admin, region);
  });
  const { execFile } = await import("node:child_process");
  const run = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, ["operator/cli.ts", ...args], (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
      ),
    );
  const bad = await run([
    "region-credential",
    "--region=Region A",
    `--kubeconfig=${tb.cluster("hub").kubeconfig}`,
  ]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /InvalidRegionName/);

  const ok = await run([
    "region-credential",
    `--region=${region}`,
    `--kubeconfig=${tb.cluster("hub").kubeconfig}`,
    "--ttl=1h",
  ]);
  t.is(ok.code, 0, ok.stderr);
  const kc = new KubeConfig();
  kc.loadFromString(ok.stdout);
  const review = await kc.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: {} });
  t.is(review.status?.userInfo?.username, `system:serviceaccount:${regionNamespace(region)}:member`);

  // Revoking the region's access makes the credential worthless.
  await revokeRegionAccess(admin, region);
  const deadline = Date.now() + 30_000;
  let code = 200;
  while (code === 200 && Date.now() < deadline) {
    code = await kc
      .makeApiClient(AuthenticationV1Api)
      .createSelfSubjectReview({ body: {} })
      .then(
        () => 200,
        (err: { code?: number }) => err.code ?? 0,
      );
    if (code === 200) await new Promise((r) => setTimeout(r, 250));
  }
  t.is(code, 401, "the token is refused once the region's ServiceAccount is gone");
});
