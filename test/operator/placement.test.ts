import test from "ava";
import fc from "fast-check";
import { decidePlacement } from "../../operator/hub/placement.ts";
import { selectorMatches } from "../../operator/runtime/labels.ts";
import { makeNode, makeRun } from "./builders.ts";

test("every accepted, ready region with enough attested GPUs is placed, best-provisioned first", (t) => {
  const d = decidePlacement(makeRun("r").placement({ minRegions: 2 }).obj(), [
    makeNode("region-a").attestedGpus(8).obj(),
    makeNode("region-b").attestedGpus(16).obj(),
    makeNode("region-c").attestedGpus(8).obj(),
  ]);
  t.is(d.outcome, "RegionsSelected");
  t.deepEqual(d.chosen, ["region-b", "region-a", "region-c"]);
  t.deepEqual(d.rejected, []);
});

test("each ineligible region gets its own reason, and the first failing check wins", (t) => {
  const d = decidePlacement(
    makeRun("r")
      .placement({ regionSelector: { matchLabels: { tier: "gold" } }, excludedJurisdictions: ["US"] })
      .learners(2, 4)
      .obj(),
    [
      makeNode("a-not-accepted")
        .accepted(false)
        .condition("Ready", "False", "NotAccepted")
        .labels({ tier: "gold" })
        .obj(),
      makeNode("b-unready")
        .condition("Ready", "False", "HeartbeatMissed", "last heartbeat 10m ago")
        .labels({ tier: "gold" })
        .obj(),
      makeNode("c-quarantined")
        .condition("Quarantined", "True", "InvalidDeltas", "NaN in delta")
        .labels({ tier: "gold" })
        .obj(),
      makeNode("d-silver").labels({ tier: "silver" }).obj(),
      makeNode("e-us").jurisdiction("US").labels({ tier: "gold" }).obj(),
      makeNode("f-small").attestedGpus(4).labels({ tier: "gold" }).obj(),
      makeNode("g-capped").capacity({ maxLearners: 1 }).labels({ tier: "gold" }).obj(),
      makeNode("h-gpu-capped").capacity({ maxGpus: 6 }).labels({ tier: "gold" }).obj(),
      makeNode("i-good").labels({ tier: "gold" }).obj(),
    ],
  );
  t.is(d.outcome, "RegionsSelected");
  t.deepEqual(d.chosen, ["i-good"]);
  t.deepEqual(
    d.rejected.map((r) => [r.name, r.reason]),
    [
      ["a-not-accepted", "NotAccepted"],
      ["b-unready", "NotReady"],
      ["c-quarantined", "Quarantined"],
      ["d-silver", "SelectorMismatch"],
      ["e-us", "JurisdictionExcluded"],
      ["f-small", "InsufficientAttestedGpus"],
      ["g-capped", "CapacityExceeded"],
      ["h-gpu-capped", "InsufficientAttestedGpus"],
    ],
  );
  t.regex(d.rejected[1]?.message ?? "", /HeartbeatMissed.*last heartbeat 10m ago/);
  t.regex(d.rejected[5]?.message ?? "", /4 attested GPUs offered; the run needs 8 \(2 learners × 4\)/);
});

test("a region not yet reporting Ready is not placed", (t) => {
  const node = makeNode("new").obj();
  node.status = {};
  const d = decidePlacement(makeRun("r").obj(), [node]);
  t.is(d.outcome, "NoMatchingRegions");
  t.deepEqual(d.rejected, [
    { name: "new", reason: "NotReady", message: "the region has not reported Ready yet" },
  ]);
});

test("too few eligible regions places nothing and says how many there were", (t) => {
  const d = decidePlacement(makeRun("r").placement({ minRegions: 3 }).obj(), [
    makeNode("a").obj(),
    makeNode("b").obj(),
    makeNode("c").accepted(false).obj(),
  ]);
  t.is(d.outcome, "TooFewRegions");
  t.deepEqual(d.chosen, []);
  t.regex(d.message, /2 eligible region\(s\) \(a, b\), fewer than placement.minRegions 3/);
});

test("maxRegions caps the choice but never crowds out a required jurisdiction", (t) => {
  const d = decidePlacement(
    makeRun("r")
      .placement({ minRegions: 2, maxRegions: 2, requiredJurisdictions: ["FR"] })
      .obj(),
    [
      makeNode("de-1").jurisdiction("DE").attestedGpus(64).obj(),
      makeNode("de-2").jurisdiction("DE").attestedGpus(32).obj(),
      makeNode("fr-1").jurisdiction("FR").attestedGpus(8).obj(),
    ],
  );
  t.is(d.outcome, "RegionsSelected");
  t.deepEqual(d.chosen, ["fr-1", "de-1"]);
  t.deepEqual(d.rejected, [
    {
      name: "de-2",
      reason: "MaxRegionsReached",
      message: "eligible, but placement.maxRegions (2) regions were already chosen",
    },
  ]);
});

test("a required jurisdiction with no eligible region fails placement by name", (t) => {
  const d = decidePlacement(
    makeRun("r")
      .placement({ requiredJurisdictions: ["DE", "FR"] })
      .obj(),
    [makeNode("de").jurisdiction("DE").obj(), makeNode("fr").jurisdiction("FR").accepted(false).obj()],
  );
  t.is(d.outcome, "RequiredJurisdictionUnavailable");
  t.regex(d.message, /required jurisdiction\(s\) FR/);
  t.deepEqual(d.chosen, []);
});

test("regions already placed stay placed when a better-provisioned region appears", (t) => {
  const d = decidePlacement(
    makeRun("r").placement({ maxRegions: 1 }).obj(),
    [makeNode("old").attestedGpus(8).obj(), makeNode("new").attestedGpus(64).obj()],
    ["old"],
  );
  t.deepEqual(d.chosen, ["old"]);
});

test("a placed region that stops being ready or attested stays placed, impaired: the run is not re-placed or stopped", (t) => {
  const run = makeRun("r").placement({ minRegions: 3 }).obj();
  const nodes = [
    makeNode("a").attestedGpus(8).obj(),
    makeNode("b").attestedGpus(8).obj(),
    makeNode("c").attestedGpus(0).condition("Ready", "False", "HeartbeatMissed").obj(),
  ];
  const d = decidePlacement(run, nodes, ["a", "b", "c"]);
  t.is(d.outcome, "RegionsSelected");
  t.deepEqual([...d.chosen].sort(), ["a", "b", "c"]);
  t.deepEqual(
    d.impaired.map((r) => [r.name, r.reason]),
    [["c", "NotReady"]],
  );
  // Not placed before: the same region is simply not eligible, and placement needs three.
  const fresh = decidePlacement(run, nodes);
  t.is(fresh.outcome, "TooFewRegions");
  t.deepEqual(fresh.impaired, []);
  // A region the hub administrator no longer accepts is dropped, placed or not.
  const revoked = decidePlacement(
    makeRun("r").placement({ minRegions: 2 }).obj(),
    [...nodes.slice(0, 2), makeNode("c").accepted(false).obj()],
    ["a", "b", "c"],
  );
  t.deepEqual([...revoked.chosen].sort(), ["a", "b"]);
  t.like(revoked.rejected[0], { name: "c", reason: "NotAccepted" });
});

test("label selectors follow Kubernetes semantics", (t) => {
  const labels = { tier: "gold", zone: "eu-1" };
  t.true(selectorMatches(undefined, labels));
  t.true(selectorMatches({}, labels));
  t.true(selectorMatches({ matchLabels: { tier: "gold" } }, labels));
  t.false(selectorMatches({ matchLabels: { tier: "gold", gpu: "h100" } }, labels));
  t.true(
    selectorMatches(
      { matchExpressions: [{ key: "zone", operator: "In", values: ["eu-1", "eu-2"] }] },
      labels,
    ),
  );
  t.false(
    selectorMatches({ matchExpressions: [{ key: "zone", operator: "NotIn", values: ["eu-1"] }] }, labels),
  );
  t.true(
    selectorMatches({ matchExpressions: [{ key: "missing", operator: "NotIn", values: ["x"] }] }, labels),
  );
  t.true(selectorMatches({ matchExpressions: [{ key: "tier", operator: "Exists", values: [] }] }, labels));
  t.false(
    selectorMatches({ matchExpressions: [{ key: "tier", operator: "DoesNotExist", values: [] }] }, labels),
  );
  t.false(selectorMatches({ matchExpressions: [{ key: "missing", operator: "In", values: ["x"] }] }, labels));
});

test("property: placement is deterministic, within bounds, and accounts for every region exactly once", (t) => {
  const node = fc.record({
    // Mostly eligible regions, so the ranking and the caps are what gets exercised.
    accepted: fc.constantFrom(true, true, true, false),
    ready: fc.constantFrom(true, true, true, false),
    jurisdiction: fc.constantFrom("DE", "FR", "US", "JP"),
    gpus: fc.constantFrom(0, 1, 2, 8, 16, 32),
    tier: fc.constantFrom("gold", "silver"),
  });
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.tuple(fc.string({ minLength: 1, maxLength: 6 }), node), {
        selector: ([n]) => n,
        maxLength: 8,
      }),
      fc.integer({ min: 1, max: 4 }),
      fc.option(fc.integer({ min: 1, max: 5 }), { nil: undefined }),
      fc.subarray(["DE", "FR", "US"]),
      (specs, minRegions, extra, required) => {
        const maxRegions = extra === undefined ? undefined : minRegions + extra - 1;
        const nodes = specs.map(([name, s]) =>
          makeNode(name)
            .accepted(s.accepted)
            .jurisdiction(s.jurisdiction)
            .attestedGpus(s.gpus)
            .labels({ tier: s.tier })
            .condition("Ready", s.ready ? "True" : "False", s.ready ? "RegionReady" : "HeartbeatMissed")
            .obj(),
        );
        const run = makeRun("r")
          .placement({ minRegions, maxRegions, requiredJurisdictions: required })
          .learners(1, 2)
          .obj();
        const d = decidePlacement(run, nodes);
        const again = decidePlacement(run, [...nodes].reverse());
        if (JSON.stringify(d) !== JSON.stringify(again)) return false;
        if (d.outcome === "RegionsSelected") {
          if (d.chosen.length < minRegions || d.chosen.length > (maxRegions ?? Number.POSITIVE_INFINITY))
            return false;
          if (
            !required.every((j) =>
              d.chosen.some((c) => nodes.find((n) => n.metadata.name === c)?.spec.jurisdiction === j),
            )
          )
            return false;
          const accounted = [...d.chosen, ...d.rejected.map((r) => r.name)].sort();
          return JSON.stringify(accounted) === JSON.stringify(nodes.map((n) => n.metadata.name).sort());
        }
        return d.chosen.length === 0 && d.message.length > 0;
      },
    ),
    { numRuns: 500 },
  );
  t.pass();
});
