import test from "ava";
import type { SovereignNode } from "../../crds/types.generated.ts";
import { judgeRegion } from "../../operator/hub/region-status.ts";
import { placementView } from "../../operator/hub/setup.ts";
import { findCondition, sameConditions, setCondition } from "../../operator/runtime/conditions.ts";
import { makeNode } from "./builders.ts";

const now = Date.parse("2026-11-24T12:00:00Z");
const ctx = { now, heartbeatTimeoutMs: 60_000, policyExists: true };
const beat = (agoSeconds: number) => new Date(now - agoSeconds * 1000).toISOString();

function judged(
  build: (n: ReturnType<typeof makeNode>) => ReturnType<typeof makeNode>,
  status: object,
  c = ctx,
) {
  const node = build(makeNode("r")).obj();
  node.status = { ...status };
  const j = judgeRegion(node, c);
  const get = (type: string) => j.conditions.find((x) => x.type === type);
  return { j, get };
}

test("a fresh, accepted, attested region is Ready and re-checked when its heartbeat would go stale", (t) => {
  const { j, get } = judged((n) => n, {
    lastHeartbeatTime: beat(10),
    gpuNodes: { total: 2, attested: 2, failing: 0 },
  });
  t.is(get("Ready")?.reason, "RegionReady");
  t.is(get("Attested")?.reason, "AllNodesAttested");
  t.is(get("Degraded")?.status, "False");
  t.is(j.recheckAfterMs, 50_001);
});

const table: [
  string,
  (n: ReturnType<typeof makeNode>) => ReturnType<typeof makeNode>,
  object,
  Partial<typeof ctx>,
  string,
  string,
][] = [
  ["never heard from", (n) => n, {}, {}, "Joined", "NeverConnected"],
  ["never heard from is not Ready", (n) => n, {}, {}, "Ready", "HeartbeatMissed"],
  [
    "unaccepted wins over everything",
    (n) => n.accepted(false),
    { lastHeartbeatTime: beat(1) },
    {},
    "Ready",
    "NotAccepted",
  ],
  [
    "stale heartbeat",
    (n) => n,
    { lastHeartbeatTime: beat(61), gpuNodes: { attested: 2 } },
    {},
    "Ready",
    "HeartbeatMissed",
  ],
  [
    "policy missing",
    (n) => n,
    { lastHeartbeatTime: beat(1), gpuNodes: { attested: 2 } },
    { policyExists: false },
    "Attested",
    "PolicyNotFound",
  ],
  [
    "policy missing is not Ready",
    (n) => n,
    { lastHeartbeatTime: beat(1), gpuNodes: { attested: 2 } },
    { policyExists: false },
    "Ready",
    "NotAttested",
  ],
  [
    "no attested GPU",
    (n) => n,
    { lastHeartbeatTime: beat(1), gpuNodes: { total: 2, attested: 0 } },
    {},
    "Attested",
    "EvidenceExpired",
  ],
  [
    "some failing: attested but degraded",
    (n) => n,
    { lastHeartbeatTime: beat(1), gpuNodes: { attested: 1, failing: 1 } },
    {},
    "Degraded",
    "NodesFailingAttestation",
  ],
  [
    "some failing still Ready",
    (n) => n,
    { lastHeartbeatTime: beat(1), gpuNodes: { attested: 1, failing: 1 } },
    {},
    "Ready",
    "RegionReady",
  ],
  [
    "some failing, some attested: not quarantined",
    (n) => n,
    { lastHeartbeatTime: beat(1), gpuNodes: { attested: 1, failing: 1 } },
    {},
    "Quarantined",
    "NotQuarantined",
  ],
  [
    "every GPU node failing: quarantined",
    (n) => n,
    { lastHeartbeatTime: beat(1), gpuNodes: { total: 2, attested: 0, failing: 2 } },
    {},
    "Quarantined",
    "AttestationRevoked",
  ],
  [
    "no evidence yet is not a quarantine",
    (n) => n,
    { lastHeartbeatTime: beat(1), gpuNodes: { total: 2, attested: 0, failing: 0 } },
    {},
    "Quarantined",
    "NotQuarantined",
  ],
  [
    "garbage heartbeat time counts as never",
    (n) => n,
    { lastHeartbeatTime: "yesterday" },
    {},
    "Joined",
    "NeverConnected",
  ],
];
for (const [name, build, status, c, type, reason] of table) {
  test(`judgement: ${name}`, (t) => {
    const { get } = judged(build, status, { ...ctx, ...c });
    t.is(get(type)?.reason, reason);
  });
}

test("setCondition keeps lastTransitionTime unless the status flips, and keeps the list sorted", (t) => {
  const t0 = new Date("2026-01-01T00:00:00Z");
  const t1 = new Date("2026-01-02T00:00:00Z");
  let cs = setCondition(undefined, { type: "Ready", status: "False", reason: "A", message: "" }, t0);
  cs = setCondition(cs, { type: "Accepted", status: "True", reason: "B", message: "" }, t0);
  t.deepEqual(
    cs.map((c) => c.type),
    ["Accepted", "Ready"],
  );
  const same = setCondition(cs, { type: "Ready", status: "False", reason: "C", message: "changed" }, t1);
  t.is(findCondition(same, "Ready")?.lastTransitionTime, "2026-01-01T00:00:00Z");
  t.is(findCondition(same, "Ready")?.reason, "C");
  const flipped = setCondition(same, { type: "Ready", status: "True", reason: "D", message: "" }, t1);
  t.is(findCondition(flipped, "Ready")?.lastTransitionTime, "2026-01-02T00:00:00Z");
  t.true(sameConditions(cs, [...cs].reverse()));
  t.false(sameConditions(cs, flipped));
});

test("sameConditions ignores key order, as the API server returns its own", (t) => {
  const mine = setCondition(
    undefined,
    { type: "Ready", status: "True", reason: "A", message: "m", observedGeneration: 2 },
    new Date(0),
  );
  const fromServer = mine.map((c) =>
    Object.fromEntries(Object.entries(c).sort(([a], [b]) => b.localeCompare(a))),
  ) as typeof mine;
  t.notDeepEqual(JSON.stringify(fromServer), JSON.stringify(mine), "the serialisations really differ");
  t.true(sameConditions(mine, fromServer));
  t.false(sameConditions(mine, [{ ...(fromServer[0] as (typeof mine)[number]), message: "other" }]));
});

test("a heartbeat alone does not change what runs see of a region; a change runs act on does", (t) => {
  const base = makeNode("region-a").attestedGpus(8).obj() as SovereignNode;
  const beat = (node: SovereignNode, time: string, message = "last heartbeat 1s ago") =>
    ({
      ...node,
      status: {
        ...node.status,
        lastHeartbeatTime: time,
        attestation: { ...node.status?.attestation, lastVerifiedTime: time, oldestEvidenceAgeSeconds: 7 },
        conditions: (node.status?.conditions ?? []).map((c) => ({ ...c, message, lastTransitionTime: time })),
      },
    }) as SovereignNode;
  const a = placementView(beat(base, "2026-11-24T10:00:00Z"));
  t.deepEqual(placementView(beat(base, "2026-11-24T10:00:10Z", "last heartbeat 9s ago")), a);
  const failing = beat(base, "2026-11-24T10:00:10Z");
  failing.status = { ...failing.status, gpuNodes: { ...failing.status?.gpuNodes, attested: 0, failing: 2 } };
  t.notDeepEqual(placementView(failing), a);
  const notReady = beat(base, "2026-11-24T10:00:10Z");
  notReady.status = {
    ...notReady.status,
    conditions: (notReady.status?.conditions ?? []).map((c) =>
      c.type === "Ready" ? { ...c, status: "False", reason: "HeartbeatMissed" } : c,
    ),
  };
  t.notDeepEqual(placementView(notReady), a);
});

test("a fresh heartbeat alone leaves the hub's conditions unchanged, so the hub writes nothing for it", (t) => {
  const at = (time: string) => {
    const node = makeNode("region-a").attestedGpus(8).obj() as SovereignNode;
    node.status = { ...node.status, lastHeartbeatTime: time };
    return judgeRegion(node, {
      now: Date.parse(time) + 4_000,
      heartbeatTimeoutMs: 60_000,
      policyExists: true,
    }).conditions.map((c) => ({ ...c, lastTransitionTime: "2026-11-24T09:00:00Z" }));
  };
  const first = at("2026-11-24T10:00:00Z");
  t.is(findCondition(first, "Ready")?.status, "True");
  t.true(sameConditions(first, at("2026-11-24T10:00:10Z")));
  // Going stale is a change worth writing, and says when the region was last heard from.
  const node = makeNode("region-a").attestedGpus(8).obj() as SovereignNode;
  node.status = { ...node.status, lastHeartbeatTime: "2026-11-24T10:00:00Z" };
  const stale = judgeRegion(node, {
    now: Date.parse("2026-11-24T10:05:00Z"),
    heartbeatTimeoutMs: 60_000,
    policyExists: true,
  }).conditions;
  t.like(
    stale.find((c) => c.type === "Ready"),
    {
      status: "False",
      reason: "HeartbeatMissed",
      message: "no heartbeat within 60s; last heartbeat at 2026-11-24T10:00:00Z",
    },
  );
});
