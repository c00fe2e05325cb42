/**
 * services/runtime/batch-plan.ts planRuns: which requests of a forward share a session run. Each request in exactly
 * one run, no split that costs more than one run, and the cheapest split found (checked against every partition of
 * small batches).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { planRuns, RUN_COST_POSITIONS } from "../../services/runtime/batch-plan.ts";
import { seededRandom } from "../support/seeded-random.ts";

/** What the runs cost: a fixed price each, plus rows × the widest row. */
function cost(lengths: readonly number[], runs: readonly number[][]): number {
  return runs.reduce((sum, run) => sum + RUN_COST_POSITIONS + run.length * Math.max(...run.map((i) => lengths[i])), 0);
}

/** The cheapest cost over every partition of the requests (small n only). */
function cheapest(lengths: readonly number[]): number {
  let best = Number.POSITIVE_INFINITY;
  const assign = (i: number, runs: number[][]) => {
    if (i === lengths.length) {
      best = Math.min(best, cost(lengths, runs));
      return;
    }
    for (const run of runs) {
      run.push(i);
      assign(i + 1, runs);
      run.pop();
    }
    runs.push([i]);
    assign(i + 1, runs);
    runs.pop();
  };
  assign(0, []);
  return best;
}

describe("planRuns", () => {
  it("runs a prompt's prefill apart from the decode rows it arrived among", () => {
    const lengths = [5, 5, 5, 250, 5, 5, 5, 5, 5];
    assert.deepEqual(planRuns(lengths), [[0, 1, 2, 4, 5, 6, 7, 8], [3]]);
  });

  it("keeps rows of similar lengths together: chains of K + 1 and small trees", () => {
    assert.deepEqual(planRuns([5, 5, 9, 5, 8, 5]), [[0, 1, 2, 3, 4, 5]]);
    assert.deepEqual(planRuns([1]), [[0]]);
    assert.deepEqual(planRuns([]), []);
  });

  it("covers every request once and finds the cheapest partition", () => {
    const random = seededRandom(7);
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + Math.floor(random() * 7);
      const lengths = Array.from({ length: n }, () => 1 + Math.floor(random() ** 3 * 300));
      const runs = planRuns(lengths);
      assert.deepEqual(
        runs.flat().sort((a, b) => a - b),
        lengths.map((_, i) => i),
        `${lengths}: each once`,
      );
      assert.equal(cost(lengths, runs), cheapest(lengths), `${lengths}: cheapest`);
    }
  });
});
