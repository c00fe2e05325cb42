import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Stream, uniform } from "../../services/engine/rng.ts";
import { chainTree, ROOT, tokenTree } from "../../services/engine/token-tree.ts";
import { compactionPlan, leafPaths, slotCount, treeMask, treePositions } from "../../services/engine/tree-attention.ts";

// root → 0, 1; 0 → 2, 3; 1 → 4; 2 → 5. Slots: root 0, node i at i + 1.
const tree = tokenTree([5, 7, 3, 4, 9, 2], [ROOT, ROOT, 0, 0, 1, 2]);

function rows(mask: Uint8Array, slots: number): string[] {
  return Array.from({ length: slots }, (_, r) => mask.subarray(r * slots, (r + 1) * slots).join(""));
}

describe("tree attention", () => {
  it("lets each slot see itself and its ancestors (hand-worked tree)", () => {
    assert.equal(slotCount(tree), 7);
    assert.deepEqual(rows(treeMask(tree), 7), [
      "1000000", // root
      "1100000", // node 0
      "1010000", // node 1
      "1101000", // node 2: root, 0
      "1100100", // node 3: root, 0
      "1010010", // node 4: root, 1
      "1101001", // node 5: root, 0, 2
    ]);
  });

  it("places each slot at pastLength + depth, which is the mask's row sum − 1 after the past", () => {
    const positions = treePositions(tree, 10);
    assert.deepEqual([...positions], [10, 11, 11, 12, 12, 12, 13]);
    const mask = treeMask(tree);
    for (let slot = 0; slot < 7; slot++) {
      const seen = mask.subarray(slot * 7, (slot + 1) * 7).reduce((a, b) => a + b, 0);
      assert.equal(positions[slot], 10 + seen - 1);
    }
  });

  it("gives a chain the causal mask and consecutive positions", () => {
    const chain = chainTree([4, 8, 15, 16]);
    assert.deepEqual(rows(treeMask(chain), 5), ["10000", "11000", "11100", "11110", "11111"]);
    assert.deepEqual([...treePositions(chain, 3)], [3, 4, 5, 6, 7]);
    assert.deepEqual(rows(treeMask(chainTree([])), 1), ["1"]);
  });

  it("lists the root-to-leaf paths, leaves in node order", () => {
    assert.deepEqual(leafPaths(tree), [
      [0, 3],
      [1, 4],
      [0, 2, 5],
    ]);
    assert.deepEqual(leafPaths(chainTree([4, 8, 15])), [[0, 1, 2]]);
    assert.deepEqual(leafPaths(chainTree([])), []);
  });
});

describe("compaction plan", () => {
  it("keeps the root and the accepted path, moved right after the committed prefix", () => {
    assert.deepEqual(compactionPlan([0, 2, 5], 10), {
      kept: Int32Array.of(0, 1, 3, 6),
      from: Int32Array.of(13, 16),
      to: Int32Array.of(12, 13),
      length: 14,
    });
    assert.deepEqual(compactionPlan([1, 4], 10), {
      kept: Int32Array.of(0, 2, 5),
      from: Int32Array.of(12, 15),
      to: Int32Array.of(11, 12),
      length: 13,
    });
    assert.deepEqual(compactionPlan([], 10), {
      kept: Int32Array.of(0),
      from: new Int32Array(),
      to: new Int32Array(),
      length: 11,
    });
  });

  it("moves nothing for a chain's accepted prefix", () => {
    const plan = compactionPlan([0, 1, 2], 5);
    assert.equal(plan.from.length, 0);
    assert.equal(plan.length, 9);
  });

  it("is safe to apply in place, in order, on any tree and path", () => {
    for (let seed = 0; seed < 200; seed++) {
      const size = 1 + Math.floor(uniform(seed, 0, Stream.draft) * 40);
      const parents = Array.from(
        { length: size },
        (_, i) => Math.floor(uniform(seed, i + 1, Stream.draft) * (i + 1)) - 1,
      );
      const random = tokenTree(new Array(size).fill(0), parents);
      const paths = leafPaths(random);
      const path = paths[seed % paths.length];
      const pastLength = seed % 7;
      // A cache whose entry at each position names it; after the moves the prefix must read past, root, path.
      const cache = Array.from({ length: pastLength + slotCount(random) }, (_, i) => i);
      const plan = compactionPlan(path, pastLength);
      plan.from.forEach((from, j) => {
        cache[plan.to[j]] = cache[from];
      });
      const expected = [
        ...Array.from({ length: pastLength }, (_, i) => i),
        pastLength,
        ...path.map((n) => pastLength + n + 1),
      ];
      assert.deepEqual(cache.slice(0, plan.length), expected);
    }
  });
});
