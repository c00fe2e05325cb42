/**
 * Medusa on stories260K, in process: with the trained heads (built, and trained first if missing, as
 * `npm run models -- --only stories260k-medusa` does), greedy output equals the plain model's target-only output on
 * 50 prompts, for a chain, a tree and adaptive K, and the heads are good enough to accept tokens.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { storyPrompts } from "../../bench/prompts.ts";
import { generateBatch, type Speculation } from "../../services/engine/generate.ts";
import { MedusaDrafter } from "../../services/engine/medusa-drafter.ts";
import { aggregateStats } from "../../services/engine/stats.ts";
import { buildModels, defaultSourceDir } from "../../services/model-builder/models-build.ts";
import { isMedusaLM, type MedusaLM } from "../../services/runtime/causal-lm.ts";
import { MODELS_ROOT, resolveModel } from "../../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../../services/runtime/tokenizer/load.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";

const PROMPTS = 50;
const TOKENS = 40;
let plain: OnnxCausalLM;
let medusa: OnnxCausalLM & MedusaLM;
let tokenizer: Tokenizer;
let prompts: number[][];

before(async () => {
  await buildModels({
    sourceDir: defaultSourceDir(),
    outDir: MODELS_ROOT,
    only: ["stories260k-medusa"],
  });
  plain = await OnnxCausalLM.load("stories260k");
  const lm = await OnnxCausalLM.load("stories260k-medusa");
  assert.ok(isMedusaLM(lm), "stories260k-medusa carries heads");
  medusa = lm;
  tokenizer = await loadTokenizer(resolveModel("stories260k").dir);
  prompts = storyPrompts(PROMPTS).map((text) => tokenizer.encode(text, { bos: true }));
});

after(async () => {
  await Promise.all([plain.close(), medusa.close()]);
});

const configs: [string, Omit<Speculation, "drafter">][] = [
  ["chain, K = 4", { k: { kind: "fixed", k: 4 } }],
  ["tree 4 deep, 3 wide, 10 nodes", { k: { kind: "fixed", k: 4 }, tree: { width: 3, nodes: 10 } }],
  ["adaptive K", { k: { kind: "adaptive", kMin: 0, kMax: 8 } }],
];

describe("Medusa on stories260K", () => {
  it("equals the plain model's target-only output on 50 prompts", async () => {
    const reference = await generateBatch(
      plain,
      prompts.map((prompt) => ({ prompt, maxNewTokens: TOKENS, tokenizer })),
    );
    for (const [label, speculation] of configs) {
      const results = await generateBatch(
        medusa,
        prompts.map((prompt) => ({
          prompt,
          maxNewTokens: TOKENS,
          tokenizer,
          speculation: { drafter: new MedusaDrafter(medusa), ...speculation },
        })),
      );
      results.forEach((r, i) => {
        assert.deepEqual(r.tokens, reference[i].tokens, `${label}, prompt ${i}`);
        assert.equal(r.text, reference[i].text, `${label}, prompt ${i}`);
        assert.equal(r.finishReason, reference[i].finishReason, `${label}, prompt ${i}`);
      });
      const stats = aggregateStats(results.map((r) => r.stats));
      if (label !== "adaptive K") {
        assert.ok(stats.tokens_per_round > 1.3, `${label}: ${stats.tokens_per_round} tokens per round`);
      }
    }
    assert.equal(medusa.cacheBytes(), 0, "caches released");
  });
});
