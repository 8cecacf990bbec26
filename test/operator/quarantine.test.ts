// How a placed region is judged for a run's open round: quarantined when all its GPUs failed
// attestation (the round does not wait), flagged when a delta it sent was refused.
import test from "ava";
import fc from "fast-check";
import type { SovereignNode } from "../../crds/types.generated.ts";
import { judgeRegionForRound } from "../../operator/hub/quarantine.ts";

const node = (gpuNodes: object, lastFailureReason?: string) =>
  ({
    metadata: { name: "region-b" },
    spec: {},
    status: { gpuNodes, ...(lastFailureReason ? { attestation: { lastFailureReason } } : {}) },
  }) as unknown as SovereignNode;

test("every GPU node failing quarantines the region, naming the last failure", (t) => {
  const j = judgeRegionForRound(
    "region-b",
    node({ total: 2, attested: 0, failing: 2 }, "MeasurementMismatch"),
    undefined,
    3,
  );
  t.like(j, { quarantined: true, reason: "RegionQuarantined" });
  t.regex(j?.message ?? "", /MeasurementMismatch/);
});

test("one attested node left keeps the region in the round", (t) => {
  t.is(judgeRegionForRound("region-b", node({ total: 2, attested: 1, failing: 1 }), undefined, 3), undefined);
});

test("no evidence yet is not a quarantine", (t) => {
  t.is(judgeRegionForRound("region-b", node({ total: 2, attested: 0, failing: 0 }), undefined, 1), undefined);
  t.is(judgeRegionForRound("region-b", undefined, undefined, 1), undefined);
});

test("a refused delta is shown on the region but does not exclude it: a valid one may follow", (t) => {
  const j = judgeRegionForRound(
    "region-b",
    node({ total: 2, attested: 2, failing: 0 }),
    { reason: "DeltaTooLarge", message: "17 MiB > 16 MiB", learner: "learner-0" },
    4,
  );
  t.like(j, { quarantined: false, reason: "DeltaRefused" });
  t.regex(j?.message ?? "", /round 4.*learner-0.*DeltaTooLarge/);
});

test("garbage counts never throw and never quarantine without a failing node (property)", (t) => {
  fc.assert(
    fc.property(fc.anything(), fc.anything(), (gpuNodes, reason) => {
      const j = judgeRegionForRound("r", node(gpuNodes as object, reason as string), undefined, 1);
      const g = (gpuNodes ?? {}) as { failing?: unknown };
      return j === undefined || (typeof g === "object" && (g.failing as number) > 0);
    }),
  );
  t.pass();
});
