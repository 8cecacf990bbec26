import test from "ava";
import { parseAvaSummary } from "./run-all.ts";

test("ava's closing summary is tallied, failures of any kind counted as failed", (t) => {
  t.deepEqual(parseAvaSummary("  ✔ a\n  ─\n\n  12 tests passed\n"), { passed: 12, failed: 0, skipped: 0 });
  t.deepEqual(
    parseAvaSummary(
      "  1 test failed\n  3 tests passed\n  2 tests skipped\n  1 test todo\n  1 uncaught exception\n",
    ),
    { passed: 3, failed: 2, skipped: 3 },
  );
  t.deepEqual(
    parseAvaSummary("  ✘ Timed out while running tests\n\n  4 tests remained pending after a timeout\n"),
    {
      passed: 0,
      failed: 4,
      skipped: 0,
    },
  );
  t.deepEqual(parseAvaSummary("nothing here"), { passed: 0, failed: 0, skipped: 0 });
});
