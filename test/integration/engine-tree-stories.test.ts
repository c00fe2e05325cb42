/**
 * Tree speculation on the stories models: with trees on, greedy output equals target-only output, for the int4 draft
 * and for prompt lookup, on many prompts; and trees verify more nodes than a chain of the same depth would.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { storyPrompts } from "../../bench/prompts.ts";
import type { TreeDrafter } from "../../services/engine/drafter.ts";
import { generateBatch } from "../../services/engine/generate.ts";
import type { KPolicyConfig } from "../../services/engine/k-policy.ts";
import { ModelDrafter } from "../../services/engine/model-drafter.ts";
import { NgramDrafter } from "../../services/engine/ngram-drafter.ts";
import { MODELS_ROOT } from "../../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../../services/runtime/tokenizer/load.ts";

const STORY =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a " +
  "big red ball under a tree. Lily ran to the ball and kicked it. The ball went up high and fell into the pond. A " +
  "kind frog jumped out and gave the ball back to Lily. Lily said thank you and they played together all day.";

function modelDir(name: string): string {
  const dir = join(MODELS_ROOT, name);
  assert.ok(existsSync(join(dir, "config.json")), `${dir} is missing: run npm run models`);
  return dir;
}

let target: OnnxCausalLM;
let draft: OnnxCausalLM;
let prompts: number[][];

before(async () => {
  target = await OnnxCausalLM.load(modelDir("stories260k"));
  draft = await OnnxCausalLM.load(modelDir("stories260k-int4"));
  const tokenizer = await loadTokenizer(modelDir("stories260k"));
  const words = STORY.split(" ");
  // 50 prompts: 24 story openings of growing length and sentences cut mid-way, some with repeats for prompt lookup,
  // and the benchmarks' first 26 story openings.
  prompts = [
    ...Array.from({ length: 24 }, (_, i) => {
      const text = words.slice(i % 6, 3 + i * 2).join(" ");
      return tokenizer.encode(i % 3 === 2 ? `${text} ${text}` : text);
    }),
    ...storyPrompts(26).map((text) => tokenizer.encode(text)),
  ];
});

after(async () => {
  await target.close();
  await draft.close();
});

const shapes: [KPolicyConfig, { width: number; nodes: number }][] = [
  [
    { kind: "fixed", k: 4 },
    { width: 3, nodes: 12 },
  ],
  [
    { kind: "fixed", k: 7 },
    { width: 4, nodes: 30 },
  ],
  [
    { kind: "adaptive", kMin: 0, kMax: 8 },
    { width: 2, nodes: 16 },
  ],
];

describe("tree speculation on stories260k", () => {
  test("greedy output with trees equals target-only output on 50 prompts × 32 tokens", async () => {
    const reference = await generateBatch(
      target,
      prompts.map((prompt) => ({ prompt, maxNewTokens: 32, eosTokenId: null })),
    );
    const drafters: TreeDrafter[] = [new ModelDrafter(draft, "int4"), new NgramDrafter()];
    for (const drafter of drafters) {
      for (const [k, tree] of shapes) {
        const label = `${drafter.name} ${JSON.stringify(k)} ${JSON.stringify(tree)}`;
        const results = await generateBatch(
          target,
          prompts.map((prompt) => ({ prompt, maxNewTokens: 32, eosTokenId: null, speculation: { drafter, k, tree } })),
        );
        for (const [i, r] of results.entries()) assert.deepEqual(r.tokens, reference[i].tokens, `${label} prompt ${i}`);
        const nodes = results.reduce((s, r) => s + r.stats.draft_tokens, 0);
        const depths = results.reduce((s, r) => s + r.stats.k_per_round.reduce((a, b) => a + b, 0), 0);
        const accepted = results.reduce((s, r) => s + r.stats.accepted_tokens, 0);
        assert.ok(accepted > 0, `${label}: nothing accepted`);
        // The model drafter always branches; prompt lookup only where the history repeats.
        if (drafter.name === "int4") assert.ok(nodes > depths, `${label}: ${nodes} nodes over depths ${depths}`);
      }
    }
    assert.equal(target.cacheBytes(), 0);
    assert.equal(draft.cacheBytes(), 0);
  });
});
