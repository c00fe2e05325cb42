/**
 * Lookahead decoding on stories260K: greedy output equals target-only output on 50 prompts for several (W, N, G),
 * and the pool's candidates are accepted often enough to matter.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { storyPrompts } from "../../bench/prompts.ts";
import { generateBatch } from "../../services/engine/generate.ts";
import type { LookaheadConfig } from "../../services/engine/lookahead.ts";
import { aggregateStats } from "../../services/engine/stats.ts";
import { resolveModel } from "../../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../../services/runtime/tokenizer/load.ts";

let target: OnnxCausalLM;
let prompts: number[][];

before(async () => {
  target = await OnnxCausalLM.load("stories260k");
  const tokenizer = await loadTokenizer(resolveModel("stories260k").dir);
  prompts = storyPrompts(50).map((text) => tokenizer.encode(text, { bos: true }));
});

after(async () => {
  await target.close();
});

const configs: LookaheadConfig[] = [
  { window: 7, ngram: 5, candidates: 7 },
  { window: 4, ngram: 3, candidates: 4 },
];

describe("lookahead decoding on stories260k", () => {
  test("greedy output equals target-only output on 50 prompts × 48 tokens", async () => {
    const reference = await generateBatch(
      target,
      prompts.map((prompt) => ({ prompt, maxNewTokens: 48 })),
    );
    for (const lookahead of configs) {
      const label = JSON.stringify(lookahead);
      const results = await generateBatch(
        target,
        prompts.map((prompt) => ({ prompt, maxNewTokens: 48, lookahead: { config: lookahead } })),
      );
      results.forEach((r, i) => {
        assert.deepEqual(r.tokens, reference[i].tokens, `${label} prompt ${i}`);
        assert.equal(r.finishReason, reference[i].finishReason, `${label} prompt ${i}`);
      });
      const stats = aggregateStats(results.map((r) => r.stats));
      // 1.63 and 1.46 tokens per round; with the Jacobi window's n-grams left out of the pool (the prompt and the
      // committed text only), 1.32 and 1.27.
      assert.ok(stats.tokens_per_round > 1.4, `${label}: ${stats.tokens_per_round} tokens per round`);
    }
    assert.equal(target.cacheBytes(), 0);
  });
});
