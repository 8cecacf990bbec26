import test from "ava";
import { DEFAULT_STALENESS, lateDeltaWeight, stalenessFactor } from "../../../deltas/aggregate/mod.ts";

test("the default staleness factor is 1/(1 + s) up to 3 rounds late", (t) => {
  t.deepEqual(
    [0, 1, 2, 3].map((s) => stalenessFactor(s)),
    [1, 1 / 2, 1 / 3, 1 / 4],
  );
  t.is(DEFAULT_STALENESS.maxRounds, 3);
  t.throws(() => stalenessFactor(4), { message: /^AggregateTooStale/ });
});

test("polynomial and exponential policies", (t) => {
  t.is(stalenessFactor(3, { kind: "polynomial", exponent: 0.5, maxRounds: 5 }), 0.5);
  t.is(stalenessFactor(3, { kind: "exponential", base: 0.5, maxRounds: 5 }), 0.125);
  t.is(stalenessFactor(0, { kind: "exponential", base: 0.5, maxRounds: 0 }), 1);
  t.throws(() => stalenessFactor(1, { kind: "exponential", base: 0.5, maxRounds: 0 }), {
    message: /^AggregateTooStale/,
  });
  t.throws(() => stalenessFactor(1, { kind: "exponential", base: 1.5, maxRounds: 3 }), {
    message: /^AggregateConfigInvalid/,
  });
  t.throws(() => stalenessFactor(1, { kind: "polynomial", exponent: -1, maxRounds: 3 }), {
    message: /^AggregateConfigInvalid/,
  });
});

test("a late delta's weight is its tokens times the factor; a delta from a future round is refused", (t) => {
  t.is(lateDeltaWeight({ round: 5, tokens: 3000 }, 7), 1000);
  t.is(lateDeltaWeight({ round: 7, tokens: 3000 }, 7), 3000);
  t.throws(() => lateDeltaWeight({ round: 8, tokens: 3000 }, 7), { message: /^AggregateRoundInvalid/ });
  t.throws(() => stalenessFactor(1.5), { message: /^AggregateRoundInvalid/ });
});
