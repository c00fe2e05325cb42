import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AdaptiveTreeShape, FixedTreeShape } from "../../services/engine/tree-policy.ts";

const narrow = { width: 2, nodes: 6 };
const wide = { width: 4, nodes: 24 };

/** Runs `rounds` rounds in which each shape gives `tokens` per sequence in `ms`; returns the shapes chosen. */
function drive(
  policy: AdaptiveTreeShape,
  rounds: number,
  cost: (shape: typeof narrow | undefined) => [number, number],
) {
  const chosen: (typeof narrow | undefined)[] = [];
  for (let i = 0; i < rounds; i++) {
    const shape = policy.choose();
    chosen.push(shape);
    policy.observe(shape, ...cost(shape));
  }
  return chosen;
}

describe("tree shape policy", () => {
  it("a fixed shape is always that shape", () => {
    assert.deepEqual(new FixedTreeShape(narrow).choose(), narrow);
  });

  it("tries the chain and every shape, then uses the most tokens per millisecond", () => {
    const policy = new AdaptiveTreeShape([narrow, wide], { trials: 2, reprobeEvery: 1000 });
    // CPU-like: the wide tree gains tokens but costs more than it gains.
    const chosen = drive(policy, 40, (s) => (s === undefined ? [3, 10] : s === narrow ? [3.5, 11] : [4, 20]));
    assert.deepEqual(chosen.slice(0, 6), [undefined, undefined, narrow, narrow, wide, wide]);
    assert.ok(chosen.slice(6).every((s) => s === narrow));
    // GPU-like: verifying more positions is nearly free, so the widest tree wins.
    const gpu = new AdaptiveTreeShape([narrow, wide], { trials: 2, reprobeEvery: 1000 });
    assert.ok(
      drive(gpu, 40, (s) => (s === undefined ? [3, 10] : s === narrow ? [3.5, 10.2] : [4, 10.4]))
        .slice(6)
        .every((s) => s === wide),
    );
    // A drafter that gains nothing from branching: the chain.
    const flat = new AdaptiveTreeShape([narrow, wide], { trials: 2, reprobeEvery: 1000 });
    assert.ok(
      drive(flat, 40, (s) => (s === undefined ? [3, 10] : s === narrow ? [3, 11] : [3, 20]))
        .slice(6)
        .every((s) => s === undefined),
    );
  });

  it("tries the others again now and then, and follows a change", () => {
    const policy = new AdaptiveTreeShape([narrow], { trials: 1, reprobeEvery: 5 });
    let treesPay = false;
    const chosen = drive(policy, 60, (s) => {
      if (s === undefined) return [3, 10];
      return treesPay ? [5, 11] : [3, 15];
    });
    assert.ok(chosen.slice(2, 30).includes(narrow), "re-probed");
    treesPay = true;
    const later = drive(policy, 60, (s) => (s === undefined ? [3, 10] : treesPay ? [5, 11] : [3, 15]));
    // Once the tree pays it is used, but for the chain's own re-probes (every 5th round).
    const recent = later.slice(-20);
    assert.ok(recent.filter((s) => s === narrow).length >= 16, `${recent.map((s) => (s ? "tree" : "chain"))}`);
    assert.ok(recent.includes(undefined), "the chain is re-probed too");
  });
});
