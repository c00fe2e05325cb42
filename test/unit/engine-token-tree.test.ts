import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { oneHot } from "../../services/engine/sampling.ts";
import {
  chainTree,
  children,
  decodeTree,
  encodeTree,
  favouriteChain,
  InvalidTreeError,
  pathTo,
  pathTokens,
  ROOT,
  TREE_LIMITS,
  tokenTree,
  treePrefix,
} from "../../services/engine/token-tree.ts";

// root → 0 (5), 1 (7); 0 → 2 (3), 3 (4); 1 → 4 (9); 2 → 5 (2)
const tokens = [5, 7, 3, 4, 9, 2];
const parents = [ROOT, ROOT, 0, 0, 1, 2];

describe("token tree", () => {
  it("derives depths, children and paths", () => {
    const tree = tokenTree(tokens, parents);
    assert.deepEqual([...tree.depths], [1, 1, 2, 2, 2, 3]);
    assert.deepEqual(children(tree, ROOT), [0, 1]);
    assert.deepEqual(children(tree, 0), [2, 3]);
    assert.deepEqual(children(tree, 5), []);
    assert.deepEqual(pathTo(tree, 5), [0, 2, 5]);
    assert.deepEqual(pathTo(tree, ROOT), []);
    assert.deepEqual(pathTokens(tree, [0, 2, 5]), [5, 3, 2]);
  });

  it("cuts a tree to a depth and a node budget, keeping node numbers", () => {
    const tree = tokenTree(tokens, parents);
    assert.equal(treePrefix(tree, 3), tree);
    const shallow = treePrefix(tree, 2);
    assert.deepEqual([...shallow.tokens], [5, 7, 3, 4, 9]);
    assert.deepEqual(pathTo(shallow, 4), [1, 4], "a path keeps its node numbers");
    assert.deepEqual([...treePrefix(tree, 3, 3).parents], [ROOT, ROOT, 0]);
    assert.deepEqual([...treePrefix(tree, 1).depths], [1, 1]);
    assert.equal(treePrefix(tree, 3, 0).tokens.length, 0);
  });

  it("makes a chain the tree whose node i has parent i − 1", () => {
    const chain = chainTree([4, 8, 15, 16]);
    assert.deepEqual([...chain.parents], [ROOT, 0, 1, 2]);
    assert.deepEqual([...chain.depths], [1, 2, 3, 4]);
    assert.equal(chainTree([]).tokens.length, 0);
    // A chain is only as bounded as its length: the adaptive K policy decides that, not the tree limits.
    assert.equal(chainTree(new Array(TREE_LIMITS.maxNodes + 1).fill(3)).depths.at(-1), TREE_LIMITS.maxNodes + 1);
  });

  it("finds the chain of first children a path kept", () => {
    const tree = tokenTree(tokens, parents);
    // The favourites: 0 → 2 → 5.
    assert.deepEqual(favouriteChain(tree, [0, 2, 5]), { proposed: 3, accepted: 3 });
    assert.deepEqual(favouriteChain(tree, [0, 3]), { proposed: 3, accepted: 1 });
    assert.deepEqual(favouriteChain(tree, [1, 4]), { proposed: 3, accepted: 0 });
    assert.deepEqual(favouriteChain(tree, []), { proposed: 3, accepted: 0 });
    assert.deepEqual(favouriteChain(tokenTree([], []), []), { proposed: 0, accepted: 0 });
  });

  it("keeps the draft distributions, one per node", () => {
    const q = [oneHot(4), oneHot(8)];
    assert.equal(chainTree([4, 8], q).distributions, q);
    assert.throws(() => chainTree([4, 8], [oneHot(4)]), /2 nodes but 1 draft distributions/);
  });
});

describe("token tree wire form", () => {
  it("sends parents as unsigned slots: a chain of K reads 0, 1, …, K − 1", () => {
    assert.deepEqual(encodeTree(chainTree([4, 8, 15])), { tokens: [4, 8, 15], parents: [0, 1, 2] });
    const wire = encodeTree(tokenTree(tokens, parents));
    assert.deepEqual(wire, { tokens, parents: [0, 0, 1, 1, 2, 3] });
    const back = decodeTree(wire);
    assert.deepEqual([...back.tokens], tokens);
    assert.deepEqual([...back.parents], parents);
    assert.deepEqual([...back.depths], [1, 1, 2, 2, 2, 3]);
    assert.equal(decodeTree({ tokens: [], parents: [] }).tokens.length, 0);
  });

  const invalid: [string, { tokens: number[]; parents: number[] }, RegExp][] = [
    ["lengths differ", { tokens: [1, 2], parents: [0] }, /2 tokens but 1 parents/],
    ["a parent after its child", { tokens: [1, 2], parents: [0, 2] }, /node 1 has parent slot 2/],
    ["a node its own parent", { tokens: [1], parents: [1] }, /node 0 has parent slot 1/],
    ["a negative parent", { tokens: [1], parents: [-1] }, /node 0 has parent slot -1/],
    ["a fractional parent", { tokens: [1, 2], parents: [0, 0.5] }, /node 1 has parent slot 0.5/],
    ["a negative token", { tokens: [1, -3], parents: [0, 1] }, /node 1 has token id -3/],
    ["a token beyond int32", { tokens: [2 ** 31], parents: [0] }, /node 0 has token id 2147483648/],
  ];
  for (const [label, wire, message] of invalid) {
    it(`refuses ${label} with an InvalidTreeError`, () => {
      assert.throws(
        () => decodeTree(wire),
        (error: unknown) =>
          error instanceof InvalidTreeError && error instanceof RangeError && message.test(error.message),
      );
    });
  }

  it("bounds the size and the depth", () => {
    const wide = { tokens: new Array(64).fill(1), parents: new Array(64).fill(0) };
    assert.throws(() => decodeTree(wide), /64 nodes, more than the 63 allowed/);
    assert.equal(decodeTree({ tokens: wide.tokens.slice(1), parents: wide.parents.slice(1) }).tokens.length, 63);
    const deep = encodeTree(chainTree(new Array(17).fill(1)));
    assert.throws(() => decodeTree(deep), /node 16 is at depth 17, deeper than 16/);
    assert.equal(decodeTree(deep, undefined, { maxNodes: 17, maxDepth: 17 }).depths[16], 17);
  });
});
