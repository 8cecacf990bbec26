import test from "ava";
import { parseAvaSummary } from "./run-all.ts";

test("passed, failed and skipped tests are counted from ava's per-test lines", (t) => {
  const out = [
    "  ✔ a › one",
    "  ✔ a › two (12ms)",
    "    ℹ a log line with ✔ inside",
    "  ✘ [fail]: b › three Error thrown in test",
    "  - [skip] c › four",
    "  - [todo] c › five",
    "  ─",
    "  b › three",
    "  1 test failed",
    "  2 tests skipped",
  ].join("\n");
  t.deepEqual(parseAvaSummary(out), { passed: 2, failed: 1, skipped: 2 });
});

test("failures outside tests count too", (t) => {
  const out =
    "  ✔ a\n  ✘ Timed out while running tests\n\n  4 tests remained pending after a timeout\n  1 uncaught exception\n";
  t.deepEqual(parseAvaSummary(out), { passed: 1, failed: 6, skipped: 0 });
});

test("nothing run is nothing counted", (t) => {
  t.deepEqual(parseAvaSummary("nothing here"), { passed: 0, failed: 0, skipped: 0 });
});
