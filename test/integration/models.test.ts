import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { AutoModelForCausalLM, Tensor, env as transformersEnv } from "@huggingface/transformers";
import { argmax, greedyDecode } from "../../services/runtime/greedy.ts";
import { MODELS_ROOT } from "../../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../../services/runtime/tokenizer/load.ts";

const STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";

/** Story openings; each is encoded with BOS and decoded greedily by both models. */
const PROMPTS = [
  "Once upon a time",
  "Tom and Sue went to the",
  "The little dog was sad because",
  "One day, a bird",
  "Mom said",
  "There was a big red ball",
  "Lily wanted to",
  "The sun was hot and",
  "Ben had a toy car. He",
  "In the park, the kids",
  "The cat saw a fish",
  "Sara and her friend",
  "It was a rainy day.",
  "Max liked to eat",
  "The old tree",
  "A girl named Amy found a",
  "Dad took the boy to the",
  "The bunny hopped",
  "Once there was a happy frog",
  "They played all day and then",
];

function modelDir(name: string): string {
  const dir = join(MODELS_ROOT, name);
  assert.ok(existsSync(join(dir, "config.json")), `${dir} is missing: run npm run models`);
  return dir;
}

describe("models built by npm run models", () => {
  test("stories260k decodes greedily from BOS alone to the known story", async () => {
    const dir = modelDir("stories260k");
    const lm = await OnnxCausalLM.load(dir);
    try {
      const { tokens } = await greedyDecode(lm, [lm.info.bosTokenId], { maxTokens: 40 });
      const text = (await loadTokenizer(dir)).decode(tokens);
      assert.ok(text.trimStart().startsWith(STORY), text);
    } finally {
      await lm.close();
    }
  });

  test("stories260k-x110m decodes token for token like stories260k (20 prompts × 64 tokens)", async () => {
    const exact = await OnnxCausalLM.load(modelDir("stories260k"));
    const scaled = await OnnxCausalLM.load(modelDir("stories260k-x110m"));
    const tokenizer = await loadTokenizer(modelDir("stories260k"));
    try {
      assert.equal(scaled.info.vocabSize, 32000);
      const prompts = PROMPTS.map((p) => tokenizer.encode(p, { bos: true }));
      const expected: number[][] = [];
      for (const ids of prompts)
        expected.push((await greedyDecode(exact, ids, { maxTokens: 64, stopAtEos: false })).tokens);
      // The slow 110M-shaped model decodes all prompts at once, one batched forward per step.
      const actual: number[][] = prompts.map(() => []);
      let inputs = prompts;
      for (let step = 0; step < 64; step++) {
        const logits = await scaled.forward(inputs.map((tokens, i) => ({ sequenceId: `p${i}`, tokens })));
        inputs = logits.map((rows, i) => {
          const token = argmax(rows, (inputs[i].length - 1) * 32000, 32000);
          actual[i].push(token);
          return [token];
        });
      }
      prompts.forEach((_, i) => {
        assert.deepEqual(actual[i], expected[i], PROMPTS[i]);
      });
    } finally {
      await Promise.all([exact.close(), scaled.close()]);
    }
  });

  test("stories260k-x110m gives padded vocabulary ids probability exactly 0", async () => {
    const scaled = await OnnxCausalLM.load(modelDir("stories260k-x110m"));
    try {
      const [logits] = await scaled.forward([{ sequenceId: "mask", tokens: [1, 403, 407] }]);
      for (let p = 0; p < 3; p++) {
        const row = logits.subarray(p * 32000, (p + 1) * 32000);
        const max = row[argmax(row)];
        assert.ok(max > -100, "a real id has the largest logit");
        assert.ok(row.subarray(512).every((x) => Math.exp(x - max) === 0));
      }
    } finally {
      await scaled.close();
    }
  });

  test("the drafts agree often, but not always, with the exact model on its own story", async () => {
    const exact = await OnnxCausalLM.load(modelDir("stories260k"));
    const { tokens } = await greedyDecode(exact, [1], { maxTokens: 150, stopAtEos: false });
    const text = [1, ...tokens];
    const choices = async (lm: OnnxCausalLM) => {
      const [logits] = await lm.forward([{ sequenceId: "text", tokens: text }]);
      lm.release("text");
      return text.map((_, p) => argmax(logits, p * lm.info.vocabSize, 512));
    };
    const reference = await choices(exact);
    await exact.close();
    for (const [name, low, high] of [
      ["stories260k-int4", 0.7, 0.999],
      ["stories260k-exit4", 0.3, 0.9],
      ["stories260k-int4-x11m", 0.7, 0.999],
    ] as const) {
      const lm = await OnnxCausalLM.load(modelDir(name));
      const got = await choices(lm);
      await lm.close();
      const rate = got.filter((t, i) => t === reference[i]).length / text.length;
      assert.ok(rate > low && rate < high, `${name}: agreement ${rate}`);
    }
  });

  test("transformers.js loads stories260k from local files and decodes the same greedy tokens", async () => {
    transformersEnv.allowRemoteModels = false;
    transformersEnv.localModelPath = MODELS_ROOT;
    const model = await AutoModelForCausalLM.from_pretrained("stories260k", {
      local_files_only: true,
      dtype: "fp32",
      device: "cpu",
    });
    try {
      const one = (v: bigint) => new Tensor("int64", BigInt64Array.of(v), [1, 1]);
      const output = (await model.generate({
        input_ids: one(1n),
        attention_mask: one(1n),
        max_new_tokens: 40,
        do_sample: false,
      })) as Tensor;
      const ids = Array.from(output.data as BigInt64Array, Number).slice(1);
      const lm = await OnnxCausalLM.load(modelDir("stories260k"));
      const { tokens } = await greedyDecode(lm, [1], { maxTokens: 40, stopAtEos: false });
      await lm.close();
      assert.deepEqual(ids, tokens);
    } finally {
      await model.dispose();
    }
  });

  test("each model directory says what it is", () => {
    for (const name of ["stories260k-int4", "stories260k-exit4", "stories260k-x110m-exit3", "stories260k-int4-x11m"]) {
      const config = JSON.parse(readFileSync(join(modelDir(name), "config.json"), "utf8"));
      assert.equal(config.model_type, "llama");
      assert.equal(config.specgate.realVocabSize, 512);
      assert.ok(existsSync(join(modelDir(name), "tokenizer.bin")));
    }
  });
});
