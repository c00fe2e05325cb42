import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CostModel } from "../../services/engine/k-policy.ts";
import { ROOT, tokenTree } from "../../services/engine/token-tree.ts";
import {
  type Branching,
  bestTree,
  expectedTokensByNodes,
  FixedTreeShape,
  TreePolicy,
  treeDraftWork,
  treeWork,
} from "../../services/engine/tree-policy.ts";
import { seededRandom } from "../support/seeded-random.ts";

/** Verify costs of a line through (1, ms1) and (16, ms16): CPU-like when 16 positions cost twice one, GPU-like flat. */
function costs(ms1: number, ms16: number, draftStepMs = 0.1): CostModel {
  const model = new CostModel({
    draftStepMs,
    verifySamples: [
      [1, ms1],
      [16, ms16],
    ],
  });
  model.alpha = 0.8;
  return model;
}

const LIMIT: Branching = { width: 4, nodes: 48 };

/**
 * Feeds a policy `rounds` tree rounds of a drafter whose favourite child is accepted with probability `favourite` and
 * whose second child with `second` (the rest never), at every depth.
 */
function teach(policy: TreePolicy, favourite: number, second: number, rounds = 200): void {
  // Four levels: the favourite line 0 → 2 → 4 → 6, each with a second child beside it (1, 3, 5, 7) that is a leaf.
  const tree = tokenTree([10, 11, 12, 13, 14, 15, 16, 17], [ROOT, ROOT, 0, 0, 2, 2, 4, 4]);
  const random = seededRandom(12345);
  for (let i = 0; i < rounds; i++) {
    const path: number[] = [];
    for (let level = 0; level < 4; level++) {
      const u = random();
      if (u < favourite) path.push(2 * level);
      else if (u < favourite + second) {
        path.push(2 * level + 1);
        break;
      } else break;
      if (path.length <= level) break;
    }
    policy.observeTree(tree, path);
  }
}

describe("expected tokens of the best trees", () => {
  it("a chain gains the products of its acceptances, a tree adds its siblings' paths", () => {
    const accept = (_d: number, r: number) => (r === 1 ? 0.5 : r === 2 ? 0.25 : 0);
    const chain = expectedTokensByNodes(accept, 3, 1, 3);
    assert.deepEqual(chain, [1, 1.5, 1.75, 1.875]);
    const tree = expectedTokensByNodes(accept, 3, 2, 5);
    // Best first: 0.5 (d1 r1), 0.25 (d2 r1) and 0.25 (d1 r2), then 0.125 twice (d3 r1, d2 r2 under the favourite).
    assert.deepEqual(tree, [1, 1.5, 1.75, 2, 2.125, 2.25]);
  });

  it("stops where no node can be accepted, and respects the depth", () => {
    assert.deepEqual(
      expectedTokensByNodes(() => 0, 4, 2, 10),
      [1],
    );
    assert.equal(expectedTokensByNodes(() => 0.9, 2, 1, 10).length, 3);
  });
});

describe("tree work", () => {
  it("counts a tree's draft forwards and the positions each level feeds", () => {
    assert.deepEqual(treeDraftWork(4, 1), { forwards: 4, positions: 10 });
    // Levels feed 1, 4, 7 and 10 positions: the root and 3 more expanded nodes per level.
    assert.deepEqual(treeDraftWork(4, 3), { forwards: 4, positions: 22 });
    const work = treeWork(tokenTree([1, 2, 3, 4], [ROOT, ROOT, 0, 0]));
    assert.deepEqual(work, { draftForwards: 2, draftPositions: 4, positions: 5 });
  });
});

describe("tree shape policy", () => {
  it("a fixed shape is always that shape", () => {
    assert.deepEqual(new FixedTreeShape({ width: 2, nodes: 6 }).choose(3), { depth: 3, width: 2, nodes: 6 });
  });

  it("picks a wide tree where verifying is nearly free, and the chain where it is steep", () => {
    const gpu = new TreePolicy(costs(10, 10.1), LIMIT);
    teach(gpu, 0.8, 0.1);
    const wide = gpu.choose(6, 6);
    assert.ok(wide && wide.width >= 3 && wide.nodes >= 24, `GPU-like: ${JSON.stringify(wide)}`);

    const cpu = new TreePolicy(costs(10, 20), LIMIT);
    teach(cpu, 0.8, 0.1);
    assert.equal(cpu.choose(6, 6), undefined, "CPU-like, steep: the chain");
  });

  it("between the two, a small tree", () => {
    const policy = new TreePolicy(costs(10, 12), LIMIT);
    teach(policy, 0.6, 0.3);
    const shape = policy.choose(4, 4);
    assert.ok(shape && shape.nodes > 4 && shape.nodes < 48, JSON.stringify(shape));
  });

  it("learns sibling acceptance: siblings never accepted leave the chain even when verifying is nearly free", () => {
    // Two children per node at most: the ranks the drafter below offers.
    const policy = new TreePolicy(costs(10, 10.5), { width: 2, nodes: 16 });
    assert.ok(policy.choose(4, 4), "the prior lets siblings pay where positions are free");
    teach(policy, 0.8, 0);
    assert.equal(policy.choose(4, 4), undefined);
    assert.ok(policy.acceptances()(1, 2) < 0.02, `rank 2 at depth 1: ${policy.acceptances()(1, 2)}`);
    assert.ok(Math.abs(policy.acceptances()(1, 1) - 0.8) < 0.05, `rank 1 at depth 1: ${policy.acceptances()(1, 1)}`);
  });

  it("chain rounds teach the favourite's acceptance per depth", () => {
    const policy = new TreePolicy(costs(10, 10), LIMIT);
    for (let i = 0; i < 200; i++) policy.observeChain(4, 4, i % 2 === 0 ? 4 : 1);
    // Depth 1 is always accepted, depth 2 half the time, and after a rejection at 2 nothing deeper is judged.
    assert.ok(policy.acceptances()(1, 1) > 0.95);
    assert.ok(Math.abs(policy.acceptances()(2, 1) - 0.5) < 0.05);
    assert.ok(policy.acceptances()(3, 1) > 0.95);
  });

  it("a drafter that stops paying is dropped, and tried again once the evidence has faded", () => {
    const policy = new TreePolicy(costs(10, 10.5), { width: 2, nodes: 16 }, { halfLife: 16 });
    teach(policy, 0.6, 0.3);
    assert.ok(policy.choose(4, 4));
    teach(policy, 0.6, 0, 100);
    assert.equal(policy.choose(4, 4), undefined);
    // Chain rounds only from here: rank 2's trials fade and its prior speaks again.
    for (let i = 0; i < 200; i++) policy.observeChain(4, 4, 2);
    assert.ok(policy.choose(4, 4));
  });
});

describe("the best tree of a round", () => {
  const accept = (_d: number, r: number) => (r === 1 ? 0.8 : r === 2 ? 0.1 : 0);
  const limit: Branching = { width: 2, nodes: 16 };
  /** Verify costs 10 ms plus `slope` per position; drafting `perForward` per forward and `perPosition` per position. */
  const priced = (slope: number, perForward = 0.1, perPosition = 0) => ({
    draftMs: (f: number, p: number) => perForward * f + perPosition * p,
    verifyMs: (n: number) => 10 + slope * n,
  });

  it("goes deeper than the chain's K where positions are nearly free", () => {
    const shape = bestTree(accept, priced(0.01), { k: 3, maxDepth: 10, limit, treeGain: 1 });
    assert.ok(shape && shape.depth > 3 && shape.depth <= 10, JSON.stringify(shape));
    assert.equal(bestTree(accept, priced(0.01), { k: 3, maxDepth: 3, limit, treeGain: 1 })?.depth, 3);
  });

  it("keeps to fewer draft levels when the draft model prices its positions dearly", () => {
    const cheap = bestTree(accept, priced(0.01), { k: 3, maxDepth: 10, limit, treeGain: 1 });
    const dear = bestTree(accept, priced(0.01, 0.1, 1), { k: 3, maxDepth: 10, limit, treeGain: 1 });
    assert.ok(cheap && (!dear || dear.depth < cheap.depth), `${JSON.stringify(cheap)} / ${JSON.stringify(dear)}`);
  });

  it("scales trees' expectation by what trees gave: a flattered tree loses to the chain", () => {
    const costs = priced(0.3);
    assert.ok(bestTree(accept, costs, { k: 4, maxDepth: 4, limit, treeGain: 1 }));
    assert.equal(bestTree(accept, costs, { k: 4, maxDepth: 4, limit, treeGain: 0.85 }), undefined);
  });
});

describe("calibration", () => {
  it("chains drawn as the model expects keep the ratio at 1", () => {
    const policy = new TreePolicy(costs(10, 10), LIMIT);
    const random = seededRandom(7);
    for (let i = 0; i < 400; i++) {
      let accepted = 0;
      while (accepted < 4 && random() < 0.7) accepted++;
      policy.observeChain(4, 4, accepted);
    }
    assert.ok(Math.abs(policy.calibration("chain") - 1) < 0.05, `${policy.calibration("chain")}`);
    assert.equal(policy.calibration("tree"), 1, "no tree has run");
  });

  it("judges a tree by the shape the round asked for: a drafter that cannot fill it is discounted", () => {
    const policy = new TreePolicy(costs(10, 10), { width: 2, nodes: 8 });
    const small = tokenTree([10, 11], [ROOT, ROOT]);
    for (let i = 0; i < 100; i++) policy.observeTree(small, i % 4 === 0 ? [] : [0], { depth: 4, width: 2, nodes: 8 });
    assert.ok(policy.calibration("tree") < 0.7, `${policy.calibration("tree")}`);
    const judgedAsDrafted = new TreePolicy(costs(10, 10), { width: 2, nodes: 8 });
    for (let i = 0; i < 100; i++) judgedAsDrafted.observeTree(small, i % 4 === 0 ? [] : [0]);
    assert.ok(judgedAsDrafted.calibration("tree") > 0.9, `${judgedAsDrafted.calibration("tree")}`);
    // A drafter with nothing to offer (the n-gram drafter on new text) gives the target's token alone.
    const empty = new TreePolicy(costs(10, 10), { width: 2, nodes: 8 });
    for (let i = 0; i < 100; i++) empty.observeTree(tokenTree([], []), [], { depth: 4, width: 2, nodes: 8 });
    assert.ok(empty.calibration("tree") < 0.4, `${empty.calibration("tree")}`);
  });

  it("trees that spend their nodes where paths are unlikely give less than the best trees of their size", () => {
    // Width 3, 4 deep: the favourites 0 → 1 → 2 → 3, and every sibling at the deepest two levels (4, 5 beside 2;
    // 6, 7 beside 3), where the best 8-node tree would put them near the root.
    const tree = tokenTree([10, 11, 12, 13, 14, 15, 16, 17], [ROOT, 0, 1, 2, 1, 1, 2, 2]);
    const policy = new TreePolicy(costs(10, 10), { width: 3, nodes: 8 });
    // Teach ranks at every depth with chains and near-the-root trees first: favourites 0.8, second children 0.15.
    const wide = tokenTree([20, 21, 22, 23, 24, 25, 26, 27], [ROOT, ROOT, ROOT, 0, 0, 0, 3, 3]);
    const random = seededRandom(99);
    const walk = (t: typeof tree) => {
      const path: number[] = [];
      for (let parent = ROOT; ; ) {
        const kids = [...t.parents.keys()].filter((n) => t.parents[n] === parent);
        const u = random();
        const next = u < 0.8 ? kids[0] : u < 0.95 ? kids[1] : undefined;
        if (next === undefined) return path;
        path.push(next);
        parent = next;
      }
    };
    for (let i = 0; i < 200; i++) policy.observeTree(wide, walk(wide));
    const before = policy.calibration("tree");
    for (let i = 0; i < 400; i++) policy.observeTree(tree, walk(tree));
    assert.ok(policy.calibration("tree") < before - 0.03, `${before} → ${policy.calibration("tree")}`);
  });
});
