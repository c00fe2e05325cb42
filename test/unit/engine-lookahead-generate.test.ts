/**
 * Lookahead decoding through the round loop on a tiny random Llama run by onnxruntime-node: greedy output equals
 * target-only output (also at the end of the context, where the window no longer fits), sampled output follows the
 * target's exact distribution, and the target's cache keeps only what plain decoding would.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { generate, generateBatch } from "../../services/engine/generate.ts";
import { type LookaheadConfig, LookaheadSequence, LookaheadSwitch } from "../../services/engine/lookahead.ts";
import { GREEDY, type SamplingParams } from "../../services/engine/sampling.ts";
import { type LookaheadVerdict, prefillTarget, verifyOnTarget } from "../../services/engine/target-verifier.ts";
import { pathTokens } from "../../services/engine/token-tree.ts";
import { LOSSLESS } from "../../services/engine/verify.ts";
import { buildRandomLlama } from "../../services/model-builder/random-llama.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { assertFollowsTarget, exactDistributions } from "../support/exact-distribution.ts";
import { RandomDrafter } from "../support/random-drafter.ts";

const VOCAB = 12;
let dir: string;
let target: OnnxCausalLM;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "specgate-lookahead-"));
  await buildRandomLlama(join(dir, "target"), {
    vocab: VOCAB,
    dim: 16,
    layers: 2,
    heads: 2,
    kvHeads: 1,
    maxSeqLen: 64,
    seed: 11,
  });
  target = await OnnxCausalLM.load(join(dir, "target"));
});

after(async () => {
  await target.close();
  await rm(dir, { recursive: true, force: true });
});

const configs: LookaheadConfig[] = [
  { window: 3, ngram: 3, candidates: 3 },
  { window: 5, ngram: 5, candidates: 5 },
  { window: 1, ngram: 2, candidates: 1 },
];

describe("lookahead decoding on a tiny model", () => {
  it("gives target-only greedy output, accepting candidates along the way", async () => {
    const cases = Array.from({ length: 12 }, (_, i) =>
      Array.from({ length: 3 + (i % 5) }, (_, j) => (i * 7 + j * 5 + ((j * j) % 3)) % VOCAB),
    );
    const reference = await generateBatch(
      target,
      cases.map((prompt) => ({ prompt, maxNewTokens: 24, eosTokenId: null })),
    );
    for (const lookahead of configs) {
      const results = await generateBatch(
        target,
        cases.map((prompt) => ({ prompt, maxNewTokens: 24, eosTokenId: null, lookahead: { config: lookahead } })),
      );
      results.forEach((r, i) => {
        assert.deepEqual(r.tokens, reference[i].tokens, `${JSON.stringify(lookahead)} prompt ${i}`);
      });
      const accepted = results.reduce((s, r) => s + r.stats.accepted_tokens, 0);
      assert.ok(accepted > 0, `${JSON.stringify(lookahead)} accepted nothing`);
    }
    assert.equal(target.cacheBytes(), 0);
  });

  it("mixes Lookahead and plain rounds under its switch, still giving target-only output", async () => {
    const prompt = [3, 7, 0, 0, 10, 10, 10, 10];
    const reference = await generate(target, prompt, { maxNewTokens: 30, eosTokenId: null });
    const lookaheadSwitch = new LookaheadSwitch({ trials: 1, probeEvery: 2 });
    const result = await generate(target, prompt, {
      maxNewTokens: 30,
      eosTokenId: null,
      lookahead: { config: configs[0], switch: lookaheadSwitch },
    });
    assert.deepEqual(result.tokens, reference.tokens);
    const [plain = 0, , lookahead = 0] = result.stats.k_histogram;
    assert.ok(plain > 0 && lookahead > 0, `k histogram ${result.stats.k_histogram}`);
    assert.ok(Number.isFinite(lookaheadSwitch.msPerToken(false)) && Number.isFinite(lookaheadSwitch.msPerToken(true)));
  });

  it("stops at the context length where plain decoding does", async () => {
    const prompt = Array.from({ length: 50 }, (_, i) => (i * 5) % VOCAB);
    const plain = await generate(target, prompt, { maxNewTokens: 100, eosTokenId: null });
    const lookahead = await generate(target, prompt, {
      maxNewTokens: 100,
      eosTokenId: null,
      lookahead: { config: { window: 5, ngram: 4, candidates: 4 } },
    });
    assert.equal(plain.finishReason, "context_length");
    assert.deepEqual(lookahead.tokens, plain.tokens);
    assert.equal(lookahead.finishReason, "context_length");
  });

  it("keeps in the target's cache only the root and the accepted candidate, as a fresh prefill would", async () => {
    const history = [3, 7, 3, 7, 3, 7, 3];
    const sequence = new LookaheadSequence(configs[1], history);
    await prefillTarget(target, [{ sequenceId: "a", history }]);
    let accepted = 0;
    for (let round = 0; round < 6; round++) {
      const plan = sequence.plan(history[history.length - 1], 4, 64 - history.length);
      assert.ok(plan.window.length > 0);
      const [verdict] = (await verifyOnTarget(target, [
        {
          sequenceId: "a",
          committed: history,
          committedOffset: 0,
          draftTokens: [],
          draftTree: plan.tree,
          lookahead: plan.window,
          sampling: GREEDY,
          acceptance: LOSSLESS,
          seed: 0,
        },
      ])) as LookaheadVerdict[];
      const added = [...pathTokens(plan.tree, verdict.path), verdict.token];
      accepted += verdict.path.length;
      assert.equal(target.sequenceLength("a"), history.length + verdict.path.length);
      history.push(...added);
      sequence.settle(plan, verdict.branchLogits, VOCAB, history, added.length);
    }
    assert.ok(accepted > 0, "no candidate accepted: the cache after an accepted path went untested");
    const [cached] = await target.forward([{ sequenceId: "a", tokens: history.slice(-1) }]);
    const [fresh] = await target.forward([{ sequenceId: "b", tokens: history }]);
    const last = fresh.subarray(fresh.length - VOCAB);
    for (const [i, x] of cached.entries()) assert.ok(Math.abs(x - last[i]) < 1e-4, `logit ${i}: ${x} vs ${last[i]}`);
    target.release("a");
    target.release("b");
  });

  it("refuses to run with a drafter as well", async () => {
    await assert.rejects(
      generate(target, [1, 2], {
        maxNewTokens: 2,
        lookahead: { config: configs[0] },
        speculation: { drafter: new RandomDrafter(VOCAB) },
      }),
      /takes no speculation/,
    );
  });
});

describe("lookahead decoding under sampling", () => {
  // Ends in text the target continues greedily (0, 0, 10, 10, …), so the pool's candidates are often accepted.
  const prompt = [3, 7, 0, 0, 10, 10, 10, 10];
  const samples = 3000;
  const settings: [string, SamplingParams][] = [
    ["temperature 1", { temperature: 1 }],
    ["temperature 0.7 with top-p 0.9", { temperature: 0.7, topP: 0.9 }],
  ];
  for (const [label, sampling] of settings) {
    it(`generates with the target's own distribution (${label})`, async () => {
      const exact = await exactDistributions(target, prompt, sampling);
      const results = await generateBatch(
        target,
        Array.from({ length: samples }, (_, seed) => ({
          prompt,
          maxNewTokens: 3,
          eosTokenId: null,
          sampling: { ...sampling, seed },
          lookahead: { config: configs[0] },
        })),
      );
      assertFollowsTarget(results, exact, VOCAB);
    });
  }
});
