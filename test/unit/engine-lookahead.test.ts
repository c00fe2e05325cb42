/**
 * Lookahead decoding's pure parts: the n-gram pool, the forward's two-dimensional mask and positions, and the round
 * step's Jacobi window and pool updates (from hand-made logits).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LookaheadSequence, LookaheadSwitch, lookaheadConfig } from "../../services/engine/lookahead.ts";
import { branchSize, branchTokens, candidateTree, lookaheadAttention } from "../../services/engine/lookahead-layout.ts";
import { NgramPool } from "../../services/engine/ngram-pool.ts";
import { tokenTree } from "../../services/engine/token-tree.ts";
import { treeAttention } from "../../services/engine/tree-attention.ts";

describe("n-gram pool", () => {
  it("keys continuations by their first token, the most recent first, at most perKey of them", () => {
    const pool = new NgramPool(3, 2);
    pool.addText([1, 2, 3, 1, 4, 5, 1, 6, 7]);
    assert.deepEqual(pool.continuations(1), [
      [6, 7],
      [4, 5],
    ]);
    assert.deepEqual(pool.continuations(2), [[3, 1]]);
    assert.deepEqual(pool.continuations(9), []);
    assert.equal(pool.size, 7 - 1);
  });

  it("moves an n-gram seen again to the front instead of keeping it twice", () => {
    const pool = new NgramPool(2, 3);
    for (const ngram of [
      [1, 2],
      [1, 3],
      [1, 2],
    ])
      pool.add(ngram);
    assert.deepEqual(pool.continuations(1), [[2], [3]]);
  });

  it("refuses n-grams of the wrong length and bad sizes", () => {
    assert.throws(() => new NgramPool(3, 2).add([1, 2]), RangeError);
    assert.throws(() => new NgramPool(1, 2), RangeError);
    assert.throws(() => new NgramPool(3, 0), RangeError);
  });
});

describe("candidate trie", () => {
  it("merges shared prefixes, keeps the pool's order and cuts to the depth and node budget", () => {
    const tree = candidateTree(
      [
        [5, 6, 7],
        [5, 6, 8],
        [9, 1, 2],
      ],
      3,
      16,
    );
    assert.deepEqual(Array.from(tree.tokens), [5, 6, 7, 8, 9, 1, 2]);
    assert.deepEqual(Array.from(tree.parents), [-1, 0, 1, 1, -1, 4, 5]);
    const cut = candidateTree(
      [
        [5, 6, 7],
        [9, 1, 2],
      ],
      2,
      3,
    );
    assert.deepEqual(Array.from(cut.tokens), [5, 6, 9]);
    assert.deepEqual(Array.from(cut.depths), [1, 2, 1]);
    assert.equal(candidateTree([], 4, 8).tokens.length, 0);
  });
});

/** For each row, the depths of the tokens it sees, sorted. */
function visibleDepths(mask: Uint8Array, depths: Int32Array): number[][] {
  const n = depths.length;
  return Array.from({ length: n }, (_, i) =>
    Array.from({ length: n }, (_, j) => j)
      .filter((j) => mask[i * n + j] === 1)
      .map((j) => depths[j])
      .sort((a, b) => a - b),
  );
}

describe("lookahead forward layout", () => {
  const tree = tokenTree([11, 12, 13], [-1, 0, -1]);
  const window = [
    [20, 21, 22],
    [30, 31, 32],
    [40, 41, 42],
  ];

  it("lays out the root, the candidates' tree, then the window level by level", () => {
    const { mask, depths } = lookaheadAttention(tree, window, 0);
    const n = 1 + 3 + 9;
    assert.equal(mask.length, n * n);
    assert.equal(branchSize(window), 9);
    assert.deepEqual(branchTokens(window), [20, 21, 22, 30, 31, 32, 40, 41, 42]);
    // Root, tree nodes at depths 1, 2, 1; guess (l, c) at 1 + c + l.
    assert.deepEqual(Array.from(depths), [0, 1, 2, 1, 1, 2, 3, 2, 3, 4, 3, 4, 5]);
    const row = (i: number) => Array.from(mask.subarray(i * n, (i + 1) * n)).join("");
    // Level 0, column 2: the root and level 0 up to its column.
    assert.equal(row(6), "1000111000000");
    // Level 2, column 1: the root, level 0's columns 0–1, then column 1 of levels 1 and 2.
    assert.equal(row(11), "1000110010010");
  });

  it("gives every token a consistent chain: it sees exactly one token at each position up to its own", () => {
    for (const before of [0, 2]) {
      const { mask, depths } = lookaheadAttention(tree, window, before);
      const n = depths.length;
      visibleDepths(mask, depths).forEach((seen, i) => {
        assert.deepEqual(
          seen,
          Array.from({ length: depths[i] + 1 }, (_, d) => d),
          `row ${i}`,
        );
        assert.equal(mask[i * n + i], 1, `row ${i} sees itself`);
        for (let j = i + 1; j < n; j++) assert.equal(mask[i * n + j], 0, `row ${i} sees only earlier tokens`);
      });
    }
  });

  it("is the tree's own attention without a window", () => {
    assert.deepEqual(lookaheadAttention(tree, [], 2), treeAttention(tree, 2));
  });

  it("refuses ragged levels", () => {
    assert.throws(() => lookaheadAttention(tree, [[1, 2], [3]], 0), RangeError);
  });
});

/** Logits rows that make `tokens[r]` the argmax of row r. */
function logitsFor(tokens: readonly number[], vocab: number): Float32Array {
  const logits = new Float32Array(tokens.length * vocab);
  tokens.forEach((token, r) => {
    logits[r * vocab + token] = 1;
  });
  return logits;
}

describe("lookahead round step", () => {
  const vocab = 50;

  it("validates (W, N, G)", () => {
    assert.throws(() => lookaheadConfig({ window: 0, ngram: 3, candidates: 2 }), /window/);
    assert.throws(() => lookaheadConfig({ window: 2, ngram: 1, candidates: 2 }), /ngram/);
    assert.throws(() => lookaheadConfig({ window: 2, ngram: 3, candidates: 99 }), /candidates/);
  });

  it("seeds the pool from the prompt and verifies the candidates that start with the root", () => {
    const sequence = new LookaheadSequence({ window: 2, ngram: 3, candidates: 2 }, [1, 2, 3, 1, 4, 5, 1]);
    const plan = sequence.plan(1, 2, 100);
    assert.deepEqual(Array.from(plan.tree.tokens), [4, 5, 2, 3]);
    // The window starts from the history's last W tokens, one level.
    assert.deepEqual(plan.window, [[5, 1]]);
    assert.deepEqual(Array.from(sequence.plan(1, 1, 100).tree.tokens), [4, 2]);
  });

  it("fills the window level by level, then shifts it and turns each column into an n-gram", () => {
    const sequence = new LookaheadSequence({ window: 2, ngram: 3, candidates: 4 }, [7, 8]);
    const history = [7, 8];
    const step = (outputs: number[], committed: number) => {
      const plan = sequence.plan(history[history.length - 1], 2, 100);
      const top = plan.window.length - 1;
      const rows = plan.window.flatMap((level, l) => level.map((_, c) => (l === top ? outputs[c] : 0)));
      history.push(committed);
      sequence.settle(plan, logitsFor(rows, vocab), vocab, history, 1);
    };
    assert.deepEqual(sequence.window, [[7, 8]]);
    step([10, 11], 9);
    assert.deepEqual(sequence.window, [
      [7, 8],
      [10, 11],
    ]);
    step([20, 21], 9);
    // Full (N − 1 = 2 levels): the columns (7, 10, 20) and (8, 11, 21) became n-grams, the oldest level left.
    assert.deepEqual(sequence.window, [
      [10, 11],
      [20, 21],
    ]);
    assert.deepEqual(sequence.pool.continuations(7), [
      [10, 20],
      [8, 9],
    ]);
    assert.deepEqual(sequence.pool.continuations(8), [
      [11, 21],
      [9, 9],
    ]);
  });

  it("leaves the window out when the context has no room for it, and cuts the candidates to the room", () => {
    const sequence = new LookaheadSequence({ window: 4, ngram: 3, candidates: 2 }, [1, 2, 3, 1, 4, 5, 1]);
    const plan = sequence.plan(1, 2, 3);
    assert.deepEqual(plan.window, []);
    assert.deepEqual(Array.from(plan.tree.tokens), [4, 5, 2]);
    sequence.settle(plan, new Float32Array(0), vocab, [1, 2, 3, 1, 4, 5, 1, 4], 1);
    assert.deepEqual(sequence.window, [[1, 4, 5, 1]]);
    // The committed text still feeds the pool.
    assert.deepEqual(sequence.pool.continuations(5), [[1, 4]]);
  });
});

describe("lookahead switch", () => {
  /** Runs `rounds` rounds where Lookahead gives `tokensOn` tokens in `msOn` and plain decoding 1 token in `msOff`. */
  function drive(lookaheadSwitch: LookaheadSwitch, rounds: number, tokensOn: number, msOn: number, msOff: number) {
    const choices: boolean[] = [];
    for (let i = 0; i < rounds; i++) {
      const on = lookaheadSwitch.on();
      choices.push(on);
      lookaheadSwitch.observe(on, on ? tokensOn : 1, on ? msOn : msOff);
    }
    return choices;
  }

  it("tries both ways, then keeps the one with fewer ms per token and probes the other now and then", () => {
    const slow = drive(new LookaheadSwitch({ trials: 2, probeEvery: 8 }), 40, 1.5, 2, 1);
    assert.deepEqual(slow.slice(0, 4), [true, true, false, false]);
    const later = slow.slice(4);
    assert.ok(later.filter((on) => on).length <= 5, `Lookahead kept on ${later.filter((on) => on).length} times`);
    assert.ok(
      later.some((on) => on),
      "never probed again",
    );
    const fast = drive(new LookaheadSwitch({ trials: 2, probeEvery: 8 }), 40, 2, 1.2, 1).slice(4);
    assert.ok(fast.filter((on) => !on).length <= 5, `plain decoding kept ${fast.filter((on) => !on).length} times`);
  });

  it("follows a change: Lookahead that starts to pay is taken up after a probe", () => {
    const lookaheadSwitch = new LookaheadSwitch({ trials: 1, probeEvery: 4, weight: 0.5 });
    drive(lookaheadSwitch, 20, 1.2, 2, 1);
    assert.ok(lookaheadSwitch.msPerToken(true) > lookaheadSwitch.msPerToken(false));
    const after = drive(lookaheadSwitch, 40, 3, 1.2, 1).slice(-8);
    assert.ok(after.filter((on) => on).length >= 6, `${after}`);
  });
});
