/**
 * The Medusa drafter in process, on a tiny random model with random heads: greedy output equals target-only output,
 * and speculative sampling keeps the target's distribution (chi-square against the exact distribution of the first two
 * tokens, joint, and of the third), for chains drawn from the heads' q and for deterministic top-k trees.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type GenerationRequest, generate, generateBatch, type Speculation } from "../../services/engine/generate.ts";
import { MedusaDrafter } from "../../services/engine/medusa-drafter.ts";
import type { SamplingParams } from "../../services/engine/sampling.ts";
import { initialHeads } from "../../services/model-builder/medusa-heads.ts";
import { writeModelDir } from "../../services/model-builder/model-dir.ts";
import { randomLlamaWeights, uniform } from "../../services/model-builder/random-llama.ts";
import { isMedusaLM, type MedusaLM } from "../../services/runtime/causal-lm.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { assertFollowsTarget, exactDistributions } from "../support/exact-distribution.ts";

const VOCAB = 32;
let dir: string;
let target: OnnxCausalLM & MedusaLM;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "specgate-engine-medusa-"));
  const weights = randomLlamaWeights({ vocab: VOCAB, dim: 16, seed: 21 });
  const next = uniform(22);
  const heads = initialHeads(weights, 3, "shared");
  for (const head of heads) {
    for (let i = 0; i < head.residual.data.length; i++) head.residual.data[i] = (2 * next() - 1) * 0.3;
  }
  await writeModelDir(
    join(dir, "tiny-medusa"),
    { ...weights, medusa: heads },
    { variant: "medusa-test", source: "random", realVocabSize: VOCAB, details: {} },
  );
  const lm = await OnnxCausalLM.load(join(dir, "tiny-medusa"));
  assert.ok(isMedusaLM(lm));
  target = lm;
});

after(async () => {
  await target.close();
  await rm(dir, { recursive: true, force: true });
});

const shapes: [string, Omit<Speculation, "drafter">][] = [
  ["chain of 3", { k: { kind: "fixed", k: 3 } }],
  ["tree 3 deep, 2 wide, 5 nodes", { k: { kind: "fixed", k: 3 }, tree: { width: 2, nodes: 5 } }],
  ["adaptive K", { k: { kind: "adaptive", kMin: 0, kMax: 6 } }],
];

describe("Medusa drafting on a tiny model", () => {
  it("gives target-only greedy output, proposing from the heads of the forward that verified", async () => {
    const prompts = [[1, 5, 9], [1], [1, 2, 3, 4, 5, 6, 7, 8], [4, 4, 4, 4]];
    const reference = await generateBatch(
      target,
      prompts.map((prompt) => ({ prompt, maxNewTokens: 24, eosTokenId: null })),
    );
    for (const [label, speculation] of shapes) {
      const results = await generateBatch(
        target,
        prompts.map((prompt) => ({
          prompt,
          maxNewTokens: 24,
          eosTokenId: null,
          speculation: { drafter: new MedusaDrafter(target), ...speculation },
        })),
      );
      results.forEach((r, i) => {
        assert.deepEqual(r.tokens, reference[i].tokens, `${label}, prompt ${i}`);
      });
      const accepted = results.reduce((n, r) => n + r.stats.accepted_tokens, 0);
      assert.ok(accepted > 0, `${label}: some proposals accepted`);
    }
    assert.equal(target.cacheBytes(), 0);
  });

  it("proposes nothing before the target has scored the history", async () => {
    const drafter = new MedusaDrafter(target);
    await drafter.open({ sequenceId: "fresh", history: [1, 2, 3], sampling: { temperature: 0 }, seed: 1 });
    assert.deepEqual(await drafter.propose([{ sequenceId: "fresh", k: 3 }]), [{ tokens: [] }]);
  });

  const samplings: [string, SamplingParams][] = [
    ["temperature 1", { temperature: 1 }],
    ["temperature 0.8, top-k 5", { temperature: 0.8, topK: 5 }],
  ];
  for (const [shapeLabel, speculation] of shapes.slice(0, 2)) {
    for (const [label, sampling] of samplings) {
      it(`samples the target's own distribution (${shapeLabel}, ${label})`, async () => {
        const prompt = [3, 7, 3, 7, 3];
        const samples = 3000;
        const exact = await exactDistributions(target, prompt, sampling);
        const drafter = new MedusaDrafter(target);
        const requests: GenerationRequest[] = Array.from({ length: samples }, (_, seed) => ({
          prompt,
          maxNewTokens: 3,
          eosTokenId: null,
          sampling: { ...sampling, seed },
          speculation: { drafter, ...speculation },
        }));
        const results = await generateBatch(target, requests);
        assertFollowsTarget(results, exact, VOCAB);
      });
    }
  }

  it("reproduces a sampled run from its seed at a fixed shape", async () => {
    const run = () =>
      generate(target, [3, 7, 3], {
        maxNewTokens: 16,
        eosTokenId: null,
        sampling: { temperature: 1, seed: 5 },
        speculation: { drafter: new MedusaDrafter(target), k: { kind: "fixed", k: 3 } },
      });
    assert.deepEqual((await run()).tokens, (await run()).tokens);
  });
});
