import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import type { ForwardRequest } from "../../services/runtime/causal-lm.ts";
import { MODELS_ROOT } from "../../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../../services/runtime/tokenizer/load.ts";

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, "../..");
const GENERATE = ["--import", "tsx", join(ROOT, "services/runtime/generate-cli.ts")];
const STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";

function requireModel(name: string): string {
  const dir = join(MODELS_ROOT, name);
  assert.ok(existsSync(join(dir, "config.json")), `${dir} is missing: run npm run models`);
  return dir;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

/** Logits of every request of `steps` run batched, and of the same requests run sequence by sequence. */
async function batchedAndAlone(lm: OnnxCausalLM, steps: readonly (readonly ForwardRequest[])[]) {
  const batched: Float32Array[][] = [];
  for (const step of steps) batched.push((await lm.forward(step)).map((logits) => logits.slice()));
  const alone: Float32Array[][] = steps.map(() => []);
  const ids = new Set(steps.flat().map((request) => request.sequenceId));
  for (const id of ids) {
    for (const [s, step] of steps.entries()) {
      const request = step.find((r) => r.sequenceId === id);
      if (request === undefined) continue;
      const [logits] = await lm.forward([{ sequenceId: `alone-${id}`, tokens: request.tokens }]);
      alone[s][step.indexOf(request)] = logits.slice();
    }
  }
  for (const id of ids) {
    lm.release(id);
    lm.release(`alone-${id}`);
  }
  return { batched, alone };
}

describe("runtime on the stories models", () => {
  test("generate --json prints the greedy story of stories260k", async () => {
    requireModel("stories260k");
    const { stdout } = await run(process.execPath, [
      ...GENERATE,
      "--model",
      "stories260k",
      "--prompt",
      "",
      "--max-tokens",
      "40",
      "--json",
    ]);
    const result = JSON.parse(stdout);
    assert.equal(result.token_ids.length, 40);
    assert.ok(result.token_ids.every((id: unknown) => Number.isInteger(id)));
    assert.notEqual(result.token_ids[0], 1, "the prompt's BOS is not part of token_ids");
    assert.ok(result.text.startsWith(STORY), result.text);
    assert.ok(result.tokens_per_s > 0);
  });

  test("generate continues a prompt and prints plain text without --json", async () => {
    const { stdout } = await run(process.execPath, [
      ...GENERATE,
      "--model",
      requireModel("stories260k"),
      "--prompt",
      "Once upon a time",
      "--max-tokens",
      "12",
    ]);
    assert.ok(stdout.startsWith("Once upon a time, there was a little girl named Lily."), stdout);
  });

  test("generate rejects bad arguments with a clear message", async () => {
    await assert.rejects(run(process.execPath, [...GENERATE, "--model", "stories260k", "--max-tokens", "zero"]), {
      stderr: /--max-tokens must be a number/,
    });
    await assert.rejects(run(process.execPath, [...GENERATE, "--prompt", "hi"]), { stderr: /--model is required/ });
    await assert.rejects(run(process.execPath, [...GENERATE, "--model", "no-such-model"]), {
      stderr: /model "no-such-model" not found/,
    });
  });

  test("stories260k: batched prompts of different lengths and draft-sized appends equal unbatched", async () => {
    const dir = requireModel("stories260k");
    const lm = await OnnxCausalLM.load(dir);
    try {
      const tokenizer = await loadTokenizer(dir);
      const encode = (text: string) => [lm.info.bosTokenId, ...tokenizer.encode(text)];
      const long = encode(
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.",
      );
      const steps: ForwardRequest[][] = [
        [
          { sequenceId: "long", tokens: long },
          { sequenceId: "short", tokens: encode("Tom") },
        ],
        [
          { sequenceId: "short", tokens: encode(" had a dog").slice(1) },
          { sequenceId: "long", tokens: [403] },
          { sequenceId: "new", tokens: encode("The sun") },
        ],
        [
          { sequenceId: "new", tokens: [261, 378, 432, 383, 286] },
          { sequenceId: "long", tokens: [407] },
          { sequenceId: "short", tokens: [261] },
        ],
      ];
      const { batched, alone } = await batchedAndAlone(lm, steps);
      for (const [s, step] of steps.entries()) {
        for (const [i, request] of step.entries()) {
          const diff = maxAbsDiff(batched[s][i], alone[s][i]);
          assert.ok(diff <= 1e-4, `step ${s} ${request.sequenceId}: max abs diff ${diff}`);
        }
      }
      assert.equal(lm.cacheBytes(), 0);
    } finally {
      await lm.close();
    }
  });

  test("stories260k-x110m: batched equals unbatched", async () => {
    const lm = await OnnxCausalLM.load(requireModel("stories260k-x110m"));
    try {
      assert.equal(lm.info.vocabSize, 32000);
      const steps: ForwardRequest[][] = [
        [
          { sequenceId: "a", tokens: [1, 403, 407, 261, 378, 432, 383, 286, 261, 376] },
          { sequenceId: "b", tokens: [1, 403] },
        ],
        [
          { sequenceId: "b", tokens: [407, 261, 378] },
          { sequenceId: "a", tokens: [298] },
        ],
      ];
      const { batched, alone } = await batchedAndAlone(lm, steps);
      for (const [s, step] of steps.entries()) {
        for (const i of step.keys()) {
          const diff = maxAbsDiff(batched[s][i], alone[s][i]);
          assert.ok(diff <= 1e-4, `step ${s} ${step[i].sequenceId}: max abs diff ${diff}`);
        }
      }
    } finally {
      await lm.close();
    }
  });
});
