import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Stream, uniform } from "../../services/engine/rng.ts";
import {
  distribution,
  drawSparse,
  oneHot,
  type SamplingParams,
  type SparseDistribution,
  sparse,
} from "../../services/engine/sampling.ts";
import { chainTree, pathTokens, ROOT, type TokenTree, tokenTree } from "../../services/engine/token-tree.ts";
import {
  acceptTreeGreedy,
  acceptTreeSpeculative,
  type RejectionUpdate,
  subtractRejected,
  verifyTree,
} from "../../services/engine/tree-verify.ts";
import { acceptGreedy, acceptSpeculative, LOSSLESS, verifyRound } from "../../services/engine/verify.ts";
import { chiSquareFit } from "../support/chi-square.ts";

/** The target's argmax per slot; a slot the verdict should not need reads as -1. */
const argmaxBySlot = (bySlot: Record<number, number>) => (slot: number) => bySlot[slot] ?? -1;

describe("greedy tree verification", () => {
  // root → 0 (5), 1 (7); 0 → 2 (3), 3 (4); 1 → 4 (9); 2 → 5 (2). Slot of node i: i + 1.
  const tree = tokenTree([5, 7, 3, 4, 9, 2], [ROOT, ROOT, 0, 0, 1, 2]);

  it("follows the path the target's argmax agrees with, then appends the target's next token", () => {
    const verdict = (bySlot: Record<number, number>) => acceptTreeGreedy(tree, argmaxBySlot(bySlot));
    assert.deepEqual(verdict({ 0: 5, 1: 3, 3: 2, 6: 8 }), { path: [0, 2, 5], accepted: 3, token: 8 });
    assert.deepEqual(verdict({ 0: 7, 2: 9, 5: 1 }), { path: [1, 4], accepted: 2, token: 1 });
    assert.deepEqual(verdict({ 0: 5, 1: 4, 4: 6 }), { path: [0, 3], accepted: 2, token: 6 });
    assert.deepEqual(verdict({ 0: 5, 1: 3, 3: 0 }), { path: [0, 2], accepted: 2, token: 0 });
    assert.deepEqual(verdict({ 0: 6 }), { path: [], accepted: 0, token: 6 });
  });

  it("takes the longest agreeing path across siblings with the same token, the first in node order on ties", () => {
    // root → 0 (5), 1 (5); 0 → 2 (1); 1 → 3 (2); 3 → 4 (3)
    const twins = tokenTree([5, 5, 1, 2, 3], [ROOT, ROOT, 0, 1, 3]);
    assert.deepEqual(acceptTreeGreedy(twins, argmaxBySlot({ 0: 5, 1: 1, 2: 2, 4: 3, 5: 0 })), {
      path: [1, 3, 4],
      accepted: 3,
      token: 0,
    });
    assert.deepEqual(acceptTreeGreedy(twins, argmaxBySlot({ 0: 5, 1: 1, 2: 2, 3: 6, 4: 7 })), {
      path: [0, 2],
      accepted: 2,
      token: 6,
    });
  });

  it("reads each slot's argmax at most once, and only where the path can go", () => {
    const reads: number[] = [];
    const read = (slot: number) => {
      reads.push(slot);
      return { 0: 5, 1: 4, 4: 6 }[slot] ?? -1;
    };
    acceptTreeGreedy(tree, read);
    assert.deepEqual(reads, [0, 1, 4]);
  });

  it("gives a chain acceptGreedy's verdicts", () => {
    for (let seed = 0; seed < 300; seed++) {
      const draw = (i: number, stream: Stream) => Math.floor(uniform(seed, i, stream) * 3);
      const draft = Array.from({ length: seed % 6 }, (_, i) => draw(i, Stream.draft));
      const target = (row: number) => draw(row, Stream.target);
      const { accepted, token } = acceptGreedy(draft, target);
      const path = Array.from({ length: accepted }, (_, i) => i);
      assert.deepEqual(acceptTreeGreedy(chainTree(draft), target), { path, accepted, token });
    }
  });
});

const VOCAB = 6;

/**
 * A synthetic target whose next-token distribution depends on the last token and the absolute position, so that
 * each node of a tree has its own p; two drafts that differ from it (and from each other).
 */
function languageModels(sampling: SamplingParams) {
  const logits = (token: number, position: number) =>
    Float32Array.from({ length: VOCAB }, (_, v) => 1.5 * Math.sin(1.3 * token + 1.7 * v + 0.9 * position + 1));
  const memo = <T>(make: (token: number, position: number) => T) => {
    const known = new Map<number, T>();
    return (token: number, position: number) => {
      const key = token * 1000 + position;
      if (!known.has(key)) known.set(key, make(token, position));
      return known.get(key) as T;
    };
  };
  return {
    p: memo((t, pos) => distribution(logits(t, pos), sampling)),
    draftA: memo((t, pos) =>
      sparse(
        distribution(
          logits(t, pos).map((x, v) => 0.5 * x + 1.5 * Math.sin(3 * v + t)),
          sampling,
        ),
      ),
    ),
    draftB: memo((t, pos) =>
      sparse(
        distribution(
          logits(t, pos).map((x, v) => 0.3 * x + 0.9 * Math.sin(2 * v + t + pos)),
          sampling,
        ),
      ),
    ),
  };
}
type LanguageModels = ReturnType<typeof languageModels>;

/** A tree shape: parents, and per node the drafter that samples its token, or the token itself (deterministic). */
interface Shape {
  readonly parents: readonly number[];
  readonly nodes: readonly ("A" | "B" | number)[];
}

/**
 * Drafts a tree of the shape at `position` (the absolute position of the root's children) after `context` (the
 * root's token), each sampled node drawing its token from its drafter's q with its own test-local key.
 */
function draftTree(shape: Shape, models: LanguageModels, context: number, position: number, key: number): TokenTree {
  const tokens: number[] = [];
  const depths: number[] = [];
  const qs: SparseDistribution[] = [];
  shape.parents.forEach((parent, i) => {
    const node = shape.nodes[i];
    depths.push(parent === ROOT ? 1 : depths[parent] + 1);
    const after = parent === ROOT ? context : tokens[parent];
    const q = node === "A" ? models.draftA : models.draftB;
    qs.push(q(after, position + depths[i] - 1));
    tokens.push(typeof node === "number" ? node : drawSparse(qs[i], uniform(key, i, Stream.draft)));
  });
  const sampled = shape.nodes.every((node) => typeof node !== "number");
  return tokenTree(tokens, shape.parents, sampled ? qs : undefined);
}

/** p at each slot of a tree drafted after `context` at `position`. */
function targetOf(tree: TokenTree, models: LanguageModels, context: number, position: number) {
  return (slot: number) =>
    slot === 0 ? models.p(context, position) : models.p(tree.tokens[slot - 1], position + tree.depths[slot - 1]);
}

const START = 3;
const CONTEXT = 0;

/**
 * The first two tokens generated after CONTEXT by tree rounds of the shape, with the request's seed: one round when it
 * emits two or more, else a second round from the first token.
 */
function firstTwo(shape: Shape, models: LanguageModels, seed: number, update: RejectionUpdate): [number, number] {
  const round = (context: number, position: number, key: number) => {
    const tree = draftTree(shape, models, context, position, key);
    const verdict = acceptTreeSpeculative(tree, targetOf(tree, models, context, position), { seed, position }, update);
    return [...pathTokens(tree, verdict.path), verdict.token];
  };
  const first = round(CONTEXT, START, 2 * seed);
  if (first.length >= 2) return [first[0], first[1]];
  return [first[0], round(first[0], START + 1, 2 * seed + 1)[0]];
}

interface Fits {
  readonly first: ReturnType<typeof chiSquareFit>;
  readonly joint: ReturnType<typeof chiSquareFit>;
}

function fitFirstTwo(shape: Shape, sampling: SamplingParams, trials: number, update = subtractRejected): Fits {
  const models = languageModels(sampling);
  const firstCounts = new Float64Array(VOCAB);
  const jointCounts = new Float64Array(VOCAB * VOCAB);
  for (let seed = 0; seed < trials; seed++) {
    const [x, y] = firstTwo(shape, models, seed, update);
    firstCounts[x]++;
    jointCounts[x * VOCAB + y]++;
  }
  const p0 = models.p(CONTEXT, START);
  const joint = Float64Array.from({ length: VOCAB * VOCAB }, (_, i) => {
    const x = Math.floor(i / VOCAB);
    return p0[x] * models.p(x, START + 1)[i % VOCAB];
  });
  return { first: chiSquareFit(firstCounts, p0), joint: chiSquareFit(jointCounts, joint) };
}

function assertFits({ first, joint }: Fits): void {
  for (const [label, fit] of [
    ["first token", first],
    ["first two tokens", joint],
  ] as const) {
    assert.equal(fit.impossible, 0, `${label}: tokens outside p's support`);
    assert.ok(fit.statistic < fit.critical, `${label}: chi-square ${fit.statistic} ≥ ${fit.critical}`);
    assert.ok(fit.totalVariation < 0.02, `${label}: total variation ${fit.totalVariation}`);
  }
}

// root → 0, 1, 2 (one q: often the same token); 0 → 3, 4; 1 → 5; 3 → 6
const threeSiblings: Shape = { parents: [ROOT, ROOT, ROOT, 0, 0, 1, 3], nodes: ["A", "A", "A", "A", "A", "A", "A"] };
// root → 0 (drafter A), 1 (drafter B); 0 → 2 (A); 1 → 3 (B), 4 (A)
const twoDrafters: Shape = { parents: [ROOT, ROOT, 0, 1, 1], nodes: ["A", "B", "A", "B", "A"] };
// Deterministic drafts (no q): root → 0 (2), 1 (2), 2 (3); 0 → 3 (1), 4 (1); 1 → 5 (4)
const fixedTwins: Shape = { parents: [ROOT, ROOT, ROOT, 0, 0, 1], nodes: [2, 2, 3, 1, 1, 4] };

const TRIALS = 30_000;

describe("tree speculative sampling", () => {
  it("emits the target's distribution with three siblings drawn from one q, often the same token", () => {
    const models = languageModels({ temperature: 1 });
    let twins = 0;
    for (let seed = 0; seed < 1000; seed++) {
      const siblings = draftTree(threeSiblings, models, CONTEXT, START, 2 * seed).tokens.subarray(0, 3);
      if (new Set(siblings).size < 3) twins++;
    }
    assert.ok(twins > 300, `siblings shared a token in only ${twins} of 1000 trees`);
    assertFits(fitFirstTwo(threeSiblings, { temperature: 1 }, TRIALS));
  });

  it("emits the target's distribution with top-k 3 at temperature 0.8 (q's support beyond p's)", () => {
    assertFits(fitFirstTwo(threeSiblings, { temperature: 0.8, topK: 3 }, TRIALS));
  });

  it("emits the target's distribution with siblings drawn from two drafters' q", () => {
    assertFits(fitFirstTwo(twoDrafters, { temperature: 1 }, TRIALS));
  });

  it("emits the target's distribution with deterministic drafts and twin siblings (q = 1 on the token)", () => {
    assertFits(fitFirstTwo(fixedTwins, { temperature: 1 }, TRIALS));
  });

  const wrongUpdates: [string, RejectionUpdate][] = [
    ["p left as it was (q not subtracted)", (p) => p],
    ["the residual not renormalised", (p, q) => ({ weights: subtractRejected(p, q).weights, mass: 1 })],
  ];
  for (const [label, update] of wrongUpdates) {
    it(`has the power to see a wrong residual update: ${label}`, () => {
      const { joint } = fitFirstTwo(threeSiblings, { temperature: 1 }, TRIALS, update);
      assert.ok(joint.statistic > joint.critical, `chi-square ${joint.statistic} should exceed ${joint.critical}`);
    });
  }
});

describe("tree speculative sampling on a chain", () => {
  const models = languageModels({ temperature: 1 });
  const chainShape: Shape = { parents: [ROOT, 0, 1, 2], nodes: ["A", "A", "A", "A"] };

  it("gives acceptSpeculative's verdicts, draw for draw, with and without q", () => {
    for (let seed = 0; seed < 2000; seed++) {
      const drafted = draftTree(chainShape, models, CONTEXT, START, seed);
      const draft = Array.from(drafted.tokens);
      const q = drafted.distributions as readonly SparseDistribution[];
      const p = targetOf(drafted, models, CONTEXT, START);
      const randomness = { seed, position: START };
      const chain = acceptSpeculative(draft, q, p, randomness);
      const path = Array.from({ length: chain.accepted }, (_, i) => i);
      assert.deepEqual(acceptTreeSpeculative(chainTree(draft, q), p, randomness), { path, ...chain });
      const deterministic = acceptSpeculative(draft, draft.map(oneHot), p, randomness);
      assert.deepEqual(acceptTreeSpeculative(chainTree(draft), p, randomness).token, deterministic.token);
    }
  });
});

describe("verifyTree", () => {
  const vocabSize = 5;
  const draftTokens = [3, 1, 4];
  const targetLogits = Float32Array.from({ length: 4 * vocabSize }, (_, i) => Math.sin(2.3 * i + 1));
  const draftDistributions = draftTokens.map(() =>
    sparse(distribution(targetLogits.subarray(0, 5), { temperature: 1 })),
  );

  it("matches verifyRound on a chain, greedy and sampling", () => {
    for (const sampling of [{ temperature: 0 }, { temperature: 1 }, { temperature: 0.7, topP: 0.9 }]) {
      for (let seed = 0; seed < 200; seed++) {
        const round = { targetLogits, vocabSize, sampling, seed, position: 9 };
        const chain = verifyRound({ ...round, draftTokens, draftDistributions, acceptance: LOSSLESS });
        const tree = verifyTree({ ...round, tree: chainTree(draftTokens, draftDistributions) });
        assert.deepEqual({ accepted: tree.accepted, token: tree.token }, chain);
      }
    }
  });

  it("needs one logits row per slot", () => {
    const round = { targetLogits, vocabSize, sampling: { temperature: 0 }, seed: 1, position: 0 };
    assert.throws(() => verifyTree({ ...round, tree: chainTree([3, 1]) }), /expected 3 logits rows of 5/);
  });
});
