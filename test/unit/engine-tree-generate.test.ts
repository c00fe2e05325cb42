/**
 * Tree rounds on real ONNX models (tiny random Llamas built on the fly): the drafters' trees and their rollback along
 * a path, the target's tree verification and compaction, greedy losslessness and sampling losslessness.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { TreeDrafter } from "../../services/engine/drafter.ts";
import { type GenerationRequest, generateBatch } from "../../services/engine/generate.ts";
import { CostModel, type KPolicyConfig } from "../../services/engine/k-policy.ts";
import { ModelDrafter } from "../../services/engine/model-drafter.ts";
import { continuationTree, NgramDrafter } from "../../services/engine/ngram-drafter.ts";
import type { SamplingParams } from "../../services/engine/sampling.ts";
import { prefillTarget, verifyOnTarget } from "../../services/engine/target-verifier.ts";
import { children, ROOT, type TokenTree, tokenTree } from "../../services/engine/token-tree.ts";
import { type Branching, TreePolicy, type TreeShaper } from "../../services/engine/tree-policy.ts";
import { LOSSLESS } from "../../services/engine/verify.ts";
import { buildRandomLlama } from "../../services/model-builder/random-llama.ts";
import { greedyDecode } from "../../services/runtime/greedy.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { assertFollowsTarget, exactDistributions } from "../support/exact-distribution.ts";

const VOCAB = 12;
let dir: string;
let target: OnnxCausalLM;
let draftModel: OnnxCausalLM;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "specgate-tree-"));
  const shape = { vocab: VOCAB, dim: 16, layers: 2, heads: 2, kvHeads: 1, maxSeqLen: 64 };
  await buildRandomLlama(join(dir, "target"), { ...shape, seed: 11 });
  await buildRandomLlama(join(dir, "draft"), { ...shape, layers: 1, seed: 12 });
  target = await OnnxCausalLM.load(join(dir, "target"));
  draftModel = await OnnxCausalLM.load(join(dir, "draft"));
});

after(async () => {
  await target.close();
  await draftModel.close();
  await rm(dir, { recursive: true, force: true });
});

function prompts(count: number): number[][] {
  return Array.from({ length: count }, (_, i) => {
    const base = Array.from({ length: 3 + (i % 5) }, (_, j) => (i * 7 + j * 5 + ((j * j) % 3)) % VOCAB);
    return i % 2 === 0 ? [...base, ...base] : base;
  });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

function shapeOf(tree: TokenTree) {
  return { tokens: [...tree.tokens], parents: [...tree.parents] };
}

describe("drafting trees", () => {
  it("n-gram: continuations become siblings, shared prefixes merge, the shape bounds the tree", () => {
    const tree = continuationTree([[1, 2, 3], [1, 2, 4], [5, 6], [7]], { depth: 2, width: 2, nodes: 10 });
    // [1,2,4] shares 1→2 and is cut at depth 2; [7] would be a third child of the root.
    assert.deepEqual(shapeOf(tree), { tokens: [1, 2, 5, 6], parents: [ROOT, 0, ROOT, 2] });
    const small = continuationTree([[1, 2, 3], [5]], { depth: 3, width: 3, nodes: 2 });
    assert.deepEqual(shapeOf(small), { tokens: [1, 2], parents: [ROOT, 0] });
  });

  it("n-gram: offers the continuations of several earlier occurrences", async () => {
    const drafter = new NgramDrafter();
    await drafter.open({
      sequenceId: "n",
      history: [1, 2, 3, 9, 1, 2, 4, 8, 1, 2],
      sampling: { temperature: 0 },
      seed: 0,
    });
    const [tree] = await drafter.proposeTrees([{ sequenceId: "n", shape: { depth: 2, width: 3, nodes: 8 } }]);
    assert.deepEqual(shapeOf(tree), { tokens: [4, 8, 3, 9], parents: [ROOT, 0, ROOT, 2] });
    drafter.commitPath("n", [2], 7);
    const [next] = await drafter.proposeTrees([{ sequenceId: "n", shape: { depth: 1, width: 1, nodes: 1 } }]);
    // History is now … 1, 2, 3, 7: the last 7 occurs nowhere before, nor does "3 7"; n = 1 finds nothing either.
    assert.equal(next.tokens.length, 0);
  });

  it("model: grows the most probable nodes by cumulative log-probability within the shape", async () => {
    const drafter = new ModelDrafter(draftModel, "draft");
    const history = prompts(3)[2];
    await drafter.open({ sequenceId: "m", history, sampling: { temperature: 0 }, seed: 0 });
    const shape = { depth: 3, width: 2, nodes: 5 };
    const [tree] = await drafter.proposeTrees([{ sequenceId: "m", shape }]);
    assert.equal(tree.tokens.length, 5);
    assert.ok(Math.max(...tree.depths) <= 3);
    for (let node = ROOT; node < tree.tokens.length; node++) assert.ok(children(tree, node).length <= 2);
    // The root's first child is the draft's greedy token, and the greedy chain is the tree's first path.
    const chain = await greedyDecode(draftModel, history, { maxTokens: 2, stopAtEos: false });
    assert.equal(tree.tokens[0], chain.tokens[0]);
    assert.equal(tree.tokens[children(tree, 0)[0]], chain.tokens[1]);
    drafter.close("m");
    assert.equal(draftModel.cacheBytes(), 0);
  });

  it("model: after a path is committed, proposes exactly what a fresh drafter would", async () => {
    const history = prompts(5)[4];
    const shape = { depth: 3, width: 2, nodes: 6 };
    for (const sampling of [{ temperature: 0 }, { temperature: 1, topK: 5 }] satisfies SamplingParams[]) {
      const rolled = new ModelDrafter(draftModel, "rolled");
      await rolled.open({ sequenceId: "a", history, sampling, seed: 3 });
      const [first] = await rolled.propose([{ sequenceId: "a", k: 2 }]);
      rolled.commit("a", history.length + 1, [5]);
      const committed = [...history, first.tokens[0], 5];
      // Paths: one through a second child (fed nodes only), then one down to a leaf of the last level (never fed).
      for (const pick of [(t: TokenTree) => [children(t, ROOT)[1], -1], (t: TokenTree) => deepestPath(t)]) {
        const [tree] = await rolled.proposeTrees([{ sequenceId: "a", shape }]);
        const path = pick(tree).filter((n) => n >= 0);
        const fresh = new ModelDrafter(draftModel, "fresh");
        await fresh.open({ sequenceId: "b", history: committed, sampling, seed: 3 });
        assert.deepEqual(shapeOf(tree), shapeOf((await fresh.proposeTrees([{ sequenceId: "b", shape }]))[0]));
        fresh.close("b");
        const cachedBefore = committed.length - 1;
        rolled.commitPath("a", path, 1);
        committed.push(...path.map((n) => tree.tokens[n]), 1);
        // Compacted, not truncated: the root and the path's fed nodes stay (a last-level leaf was never fed).
        const fed = path.filter((n) => tree.depths[n] < shape.depth).length;
        assert.equal(draftModel.sequenceLength("a"), cachedBefore + 1 + fed);
      }
      const [after] = await rolled.proposeTrees([{ sequenceId: "a", shape }]);
      const fresh = new ModelDrafter(draftModel, "fresh");
      await fresh.open({ sequenceId: "b", history: committed, sampling, seed: 3 });
      assert.deepEqual(shapeOf(after), shapeOf((await fresh.proposeTrees([{ sequenceId: "b", shape }]))[0]));
      fresh.close("b");
      rolled.close("a");
    }
    assert.equal(draftModel.cacheBytes(), 0);
  });
});

/** The nodes from the root down to the deepest node (the first in node order). */
function deepestPath(tree: TokenTree): number[] {
  let deepest = 0;
  for (let node = 0; node < tree.tokens.length; node++) if (tree.depths[node] > tree.depths[deepest]) deepest = node;
  const path: number[] = [];
  for (let n = deepest; n !== ROOT; n = tree.parents[n]) path.unshift(n);
  return path;
}

describe("verifying a tree on the target", () => {
  it("accepts the target's greedy path and leaves the cache as plain decoding would", async () => {
    const history = prompts(3)[2];
    const plain = await greedyDecode(target, history, { maxTokens: 3, stopAtEos: false });
    const [a, b, c] = plain.tokens;
    const wrong = (x: number) => (x + 1) % VOCAB;
    // Root children: wrong, a; under a: wrong, b (the path); under the first wrong: a.
    const tree = tokenTree([wrong(a), a, wrong(b), b, a], [ROOT, ROOT, 1, 1, 0]);
    for (const [offset, label] of [
      [0, "whole history"],
      [history.length - 3, "history the cache lacks"],
    ] as const) {
      await prefillTarget(target, [{ sequenceId: "v", history }]);
      if (offset > 0) target.truncate("v", offset);
      const [verdict] = await verifyOnTarget(target, [
        {
          sequenceId: "v",
          committed: history.slice(offset),
          committedOffset: offset,
          draftTokens: [],
          draftTree: tree,
          sampling: { temperature: 0 },
          acceptance: LOSSLESS,
          seed: 0,
        },
      ]);
      assert.deepEqual(verdict, { path: [1, 3], accepted: 2, token: c }, label);
      assert.equal(target.sequenceLength("v"), history.length + 2);
      const [logits] = await target.forward([{ sequenceId: "v", tokens: [c] }]);
      target.release("v");
      const [fresh] = await target.forward([{ sequenceId: "fresh", tokens: [...history, a, b, c] }]);
      target.release("fresh");
      assert.ok(maxAbsDiff(logits, fresh.subarray(fresh.length - VOCAB)) <= 1e-4, label);
    }
  });

  it("refuses lossy acceptance and draft tokens beside a tree", async () => {
    const job = {
      sequenceId: "r",
      committed: [1, 2],
      committedOffset: 0,
      draftTree: tokenTree([3], [ROOT]),
      sampling: { temperature: 0 },
      seed: 0,
    };
    await assert.rejects(verifyOnTarget(target, [{ ...job, draftTokens: [], acceptance: { kind: "top-k", k: 2 } }]));
    await assert.rejects(verifyOnTarget(target, [{ ...job, draftTokens: [3], acceptance: LOSSLESS }]));
  });
});

/** A shaper that takes the given branchings in turn, round after round. */
function rotating(shapes: readonly (Branching | undefined)[]): TreeShaper {
  let next = 0;
  return {
    choose: (k) => {
      const shape = shapes[next++ % shapes.length];
      return shape && { depth: k, ...shape };
    },
    observeTree() {},
    observeChain() {},
  };
}

const treePolicies: [KPolicyConfig, Branching | TreeShaper][] = [
  // Switches between the chain and two trees from round to round.
  [{ kind: "fixed", k: 3 }, rotating([undefined, { width: 2, nodes: 4 }, { width: 3, nodes: 9 }])],
  // The tree policy over measured costs and acceptance, deciding per round.
  [{ kind: "adaptive", kMin: 0, kMax: 5 }, new TreePolicy(new CostModel(), { width: 3, nodes: 12 })],
  [
    { kind: "fixed", k: 1 },
    { width: 3, nodes: 3 },
  ],
  [
    { kind: "fixed", k: 4 },
    { width: 2, nodes: 10 },
  ],
  [
    { kind: "fixed", k: 6 },
    { width: 4, nodes: 30 },
  ],
  [
    { kind: "adaptive", kMin: 0, kMax: 6 },
    { width: 3, nodes: 12 },
  ],
];

describe("greedy generation with trees", () => {
  it("equals target-only decoding for both tree drafters and every shape", async () => {
    const cases = prompts(12);
    const reference = await generateBatch(
      target,
      cases.map((prompt) => ({ prompt, maxNewTokens: 24, eosTokenId: null })),
    );
    const drafters: TreeDrafter[] = [new ModelDrafter(draftModel, "draft"), new NgramDrafter()];
    for (const drafter of drafters) {
      for (const [k, tree] of treePolicies) {
        const results = await generateBatch(
          target,
          cases.map((prompt) => ({ prompt, maxNewTokens: 24, eosTokenId: null, speculation: { drafter, k, tree } })),
        );
        const label = `${drafter.name} ${JSON.stringify(k)} ${"choose" in tree ? "adaptive shape" : JSON.stringify(tree)}`;
        for (const [i, r] of results.entries()) assert.deepEqual(r.tokens, reference[i].tokens, `${label} prompt ${i}`);
        const accepted = results.reduce((s, r) => s + r.stats.accepted_tokens, 0);
        assert.ok(accepted > 0, `${label}: no node accepted`);
        // Statistics per position are per depth: no deeper than K, never more accepted than proposed there.
        const maxK = k.kind === "fixed" ? k.k : k.kMax;
        for (const { stats } of results) {
          assert.ok(stats.proposed_per_position.length <= maxK, `${label}: ${stats.proposed_per_position}`);
          stats.accepted_per_position.forEach((a, i) => {
            assert.ok(a <= stats.proposed_per_position[i]);
          });
          assert.ok(stats.draft_tokens >= stats.proposed_per_position.reduce((a, b) => a + b, 0));
        }
      }
    }
    assert.equal(draftModel.cacheBytes(), 0);
    assert.equal(target.cacheBytes(), 0);
  });

  it("stops at the context length where plain decoding does", async () => {
    const prompt = Array.from({ length: 50 }, (_, i) => (i * 5) % VOCAB);
    const plain = await generateBatch(target, [{ prompt, maxNewTokens: 100, eosTokenId: null }]);
    const spec = await generateBatch(target, [
      {
        prompt,
        maxNewTokens: 100,
        eosTokenId: null,
        speculation: {
          drafter: new ModelDrafter(draftModel, "draft"),
          k: { kind: "fixed", k: 6 },
          tree: { width: 4, nodes: 40 },
        },
      },
    ]);
    assert.equal(plain[0].finishReason, "context_length");
    assert.deepEqual(spec[0].tokens, plain[0].tokens);
    assert.equal(spec[0].finishReason, "context_length");
  });
});

describe("speculative sampling with trees on a tiny model", () => {
  const prompt = [3, 7, 3, 7, 3];
  const samples = 3000;
  const settings: [string, SamplingParams, () => TreeDrafter, KPolicyConfig, { width: number; nodes: number }][] = [
    [
      "temperature 1, model tree",
      { temperature: 1 },
      () => new ModelDrafter(draftModel, "draft"),
      { kind: "fixed", k: 2 },
      { width: 3, nodes: 8 },
    ],
    [
      "top-k 6, n-gram tree",
      { temperature: 1.2, topK: 6 },
      () => new NgramDrafter(),
      { kind: "fixed", k: 3 },
      { width: 3, nodes: 8 },
    ],
  ];
  for (const [label, sampling, drafter, k, tree] of settings) {
    it(`generates with the target's own distribution (${label})`, async () => {
      const exact = await exactDistributions(target, prompt, sampling);
      const requests: GenerationRequest[] = Array.from({ length: samples }, (_, seed) => ({
        prompt,
        maxNewTokens: 3,
        eosTokenId: null,
        sampling: { ...sampling, seed },
        speculation: { drafter: drafter(), k, tree },
      }));
      const results = await generateBatch(target, requests);
      assertFollowsTarget(results, exact, VOCAB);
    });
  }
});
