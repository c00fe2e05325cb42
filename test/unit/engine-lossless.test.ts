/**
 * Greedy losslessness on the real stories260K model (built by `npm run models`): for every drafter (the int4 draft,
 * the early-exit draft, prompt lookup, and one proposing random tokens) and for fixed and adaptive K, speculative
 * output equals target-only output token for token on 50 prompts; EOS and stop strings end generation where plain
 * decoding ends it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { storyPrompts } from "../../bench/prompts.ts";
import type { Drafter } from "../../services/engine/drafter.ts";
import { type GenerationRequest, type GenerationResult, generateBatch } from "../../services/engine/generate.ts";
import type { KPolicyConfig } from "../../services/engine/k-policy.ts";
import { ModelDrafter } from "../../services/engine/model-drafter.ts";
import { NgramDrafter } from "../../services/engine/ngram-drafter.ts";
import { aggregateStats } from "../../services/engine/stats.ts";
import { greedyDecode } from "../../services/runtime/greedy.ts";
import { resolveModel } from "../../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../../services/runtime/tokenizer/load.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";
import { RandomDrafter } from "../support/random-drafter.ts";

const PROMPTS = 50;
const TOKENS = 40;
let target: OnnxCausalLM;
let int4: OnnxCausalLM;
let exit4: OnnxCausalLM;
let tokenizer: Tokenizer;
let prompts: number[][];
let drafters: Drafter[];

before(async () => {
  target = await OnnxCausalLM.load("stories260k");
  int4 = await OnnxCausalLM.load("stories260k-int4");
  exit4 = await OnnxCausalLM.load("stories260k-exit4");
  tokenizer = await loadTokenizer(resolveModel("stories260k").dir);
  prompts = storyPrompts(PROMPTS).map((text) => tokenizer.encode(text, { bos: true }));
  drafters = [
    new ModelDrafter(int4, "int4"),
    new ModelDrafter(exit4, "early-exit"),
    new NgramDrafter(),
    new RandomDrafter(target.info.vocabSize),
  ];
});

after(async () => {
  await Promise.all([target.close(), int4.close(), exit4.close()]);
});

const policies: KPolicyConfig[] = [
  { kind: "fixed", k: 4 },
  { kind: "adaptive", kMin: 0, kMax: 8 },
];

/** Generates for the first `count` prompts, all in one batch. */
function run(extra: Omit<GenerationRequest, "prompt">, count = PROMPTS): Promise<GenerationResult[]> {
  return generateBatch(
    target,
    prompts.slice(0, count).map((prompt) => ({ prompt, ...extra })),
  );
}

describe("greedy speculative decoding on stories260K", () => {
  it("target-only decoding equals the runtime's greedy decoding", async () => {
    const results = await run({ maxNewTokens: TOKENS, tokenizer });
    for (const [i, prompt] of prompts.slice(0, 10).entries()) {
      const reference = await greedyDecode(target, prompt, { maxTokens: TOKENS });
      assert.deepEqual(results[i].tokens, reference.tokens, `prompt ${i}`);
    }
  });

  it("equals target-only output for every drafter, with fixed and adaptive K", async () => {
    const reference = await run({ maxNewTokens: TOKENS, tokenizer });
    assert.ok(reference.some((r) => r.finishReason === "eos") || reference.every((r) => r.finishReason === "length"));
    for (const drafter of drafters) {
      for (const k of policies) {
        const results = await run({ maxNewTokens: TOKENS, tokenizer, speculation: { drafter, k } });
        results.forEach((r, i) => {
          const what = `${drafter.name} ${k.kind} prompt ${i}`;
          assert.deepEqual(r.tokens, reference[i].tokens, what);
          assert.equal(r.text, reference[i].text, what);
          assert.equal(r.finishReason, reference[i].finishReason, what);
        });
        const proposed = results.reduce((s, r) => s + r.stats.draft_tokens, 0);
        assert.ok(proposed > 0, `${drafter.name} ${k.kind}: nothing proposed`);
        if (drafter.name === "int4") {
          const alpha = aggregateStats(results.map((r) => r.stats)).alpha_per_token;
          assert.ok(alpha > 0.6, `int4 per-token acceptance ${alpha}`);
        }
      }
    }
    for (const model of [int4, exit4]) assert.equal(model.cacheBytes(), 0, "drafter caches released");
    assert.equal(target.cacheBytes(), 0, "target caches released");
  });

  it("ends at the same token as plain decoding for a stop string spanning token boundaries", async () => {
    const plain = await run({ maxNewTokens: TOKENS, tokenizer }, 16);
    // A stop string from the middle of one token to the middle of a later one, in the first prompt's story.
    const pieces = plain[0].tokens.map((_, n) => tokenizer.decode(plain[0].tokens.slice(0, n + 1)).length);
    const from = pieces[8] - 2;
    const stop = plain[0].text.slice(from, pieces[10] - 1);
    assert.ok(stop.length >= 3, `stop string ${JSON.stringify(stop)}`);
    const reference = await run({ maxNewTokens: TOKENS, tokenizer, stopStrings: [stop] }, 16);
    assert.equal(reference[0].finishReason, "stop");
    assert.equal(reference[0].text, plain[0].text.slice(0, plain[0].text.indexOf(stop)));
    for (const drafter of drafters) {
      const results = await run(
        { maxNewTokens: TOKENS, tokenizer, stopStrings: [stop], speculation: { drafter, k: { kind: "fixed", k: 6 } } },
        16,
      );
      results.forEach((r, i) => {
        assert.deepEqual(r.tokens, reference[i].tokens, `${drafter.name} prompt ${i}`);
        assert.equal(r.text, reference[i].text);
        assert.equal(r.finishReason, reference[i].finishReason);
      });
    }
  });

  // stories260K ends a story with BOS (id 1, llama2.c's delimiter), never with its configured EOS (2): the test
  // names id 1 as the end token.
  it("ends at the end token where plain decoding does, keeping it as the last token", async () => {
    const end = 1;
    const long = await run({ maxNewTokens: 400, eosTokenId: end }, 12);
    const ended = long.filter((r) => r.finishReason === "eos");
    assert.ok(ended.length >= 6, `${ended.length} stories reach their end within 400 tokens`);
    for (const r of ended) assert.equal(r.tokens.at(-1), end);
    const results = await run(
      {
        maxNewTokens: 400,
        eosTokenId: end,
        speculation: { drafter: drafters[0], k: { kind: "adaptive", kMin: 0, kMax: 8 } },
      },
      12,
    );
    results.forEach((r, i) => {
      assert.deepEqual(r.tokens, long[i].tokens, `prompt ${i}`);
      assert.equal(r.finishReason, long[i].finishReason);
    });
  });
});
