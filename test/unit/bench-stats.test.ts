import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pairedRatio } from "../../bench/stats.ts";

describe("paired ratio", () => {
  it("is the geometric mean of the pairs' ratios, exact when every pair agrees", () => {
    assert.deepEqual(pairedRatio([2, 4, 8], [1, 2, 4]), { ratio: 2, ci95: [2, 2], pairs: 3 });
  });

  it("widens with the pairs' disagreement and still contains the ratio", () => {
    const steady = pairedRatio([1.1, 1.2, 1.0, 1.1], [1, 1, 1, 1]);
    const noisy = pairedRatio([1.5, 0.8, 1.4, 0.9], [1, 1, 1, 1]);
    for (const r of [steady, noisy]) assert.ok(r.ci95[0] < r.ratio && r.ratio < r.ci95[1], JSON.stringify(r));
    assert.ok(noisy.ci95[1] - noisy.ci95[0] > steady.ci95[1] - steady.ci95[0]);
    assert.ok(steady.ci95[0] > 1, "a steady 10 % gain is told apart from none");
    assert.ok(noisy.ci95[0] < 1 && noisy.ci95[1] > 1, "a noisy one is not");
  });
});
