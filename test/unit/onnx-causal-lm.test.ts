import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { buildLlamaGraph, OPSET } from "../../services/model-builder/llama-graph.ts";
import { toHfConfig } from "../../services/model-builder/model-config.ts";
import { serializeModel } from "../../services/model-builder/onnx-graph.ts";
import { buildRandomLlama, randomLlamaWeights } from "../../services/model-builder/random-llama.ts";
import type { ForwardRequest } from "../../services/runtime/causal-lm.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { CacheCapacityError, ContextLengthError } from "../../services/runtime/runtime-errors.ts";

const TOLERANCE = 1e-4;
const VOCAB = 64;
const CONTEXT = 256;

let dir: string;
let lm: OnnxCausalLM;

/** Deterministic token ids that differ per seed. */
function tokens(count: number, seed: number): number[] {
  return Array.from({ length: count }, (_, i) => (seed * 31 + i * 17 + ((i * i) % 7)) % VOCAB);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, "logits of different lengths");
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

function assertClose(actual: Float32Array, expected: Float32Array, what: string): void {
  const diff = maxAbsDiff(actual, expected);
  assert.ok(diff <= TOLERANCE, `${what}: max abs diff ${diff}`);
}

let referenceCount = 0;

/** Logits of `appended` after `history`, computed by a sequence alone in its own forwards (no batching, no padding). */
async function alone(history: readonly number[], appended: readonly number[]): Promise<Float32Array> {
  const sequenceId = `reference-${referenceCount++}`;
  if (history.length > 0) await lm.forward([{ sequenceId, tokens: history }]);
  const [logits] = await lm.forward([{ sequenceId, tokens: appended }]);
  lm.release(sequenceId);
  return logits.slice();
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "specgate-causal-lm-"));
  await buildRandomLlama(join(dir, "tiny"), {
    vocab: VOCAB,
    dim: 32,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    maxSeqLen: CONTEXT,
  });
  lm = await OnnxCausalLM.load(join(dir, "tiny"));
});

after(async () => {
  await lm.close();
  await rm(dir, { recursive: true, force: true });
});

describe("OnnxCausalLM", () => {
  test("reads the model's dimensions from config.json and the graph", () => {
    assert.equal(lm.info.name, "tiny");
    assert.equal(lm.info.vocabSize, VOCAB);
    assert.equal(lm.info.contextLength, CONTEXT);
    assert.equal(lm.info.bosTokenId, 1);
    assert.equal(lm.info.eosTokenId, 2);
    // 2 layers × (key + value) × 2 kv heads × head_dim 8 × 4 bytes
    assert.equal(lm.info.kvBytesPerToken, 2 * 2 * 2 * 8 * 4);
  });

  test("every thread-spinning mode runs the model to the same logits on two intra-op threads", async () => {
    const history = tokens(40, 3);
    const expected = await alone(history, [5, 6, 7]);
    for (const threadSpinning of ["run", "always", "off"] as const) {
      const threaded = await OnnxCausalLM.load(join(dir, "tiny"), { intraOpThreads: 2, threadSpinning });
      try {
        await threaded.forward([{ sequenceId: "s", tokens: history }]);
        const [logits] = await threaded.forward([{ sequenceId: "s", tokens: [5, 6, 7] }]);
        assertClose(logits, expected, `threadSpinning ${threadSpinning}`);
      } finally {
        await threaded.close();
      }
    }
  });

  test("batched forward over sequences of very different lengths equals unbatched forwards", async () => {
    const histories = { long: tokens(150, 1), short: tokens(3, 2), mid: tokens(40, 3) };
    await lm.forward(Object.entries(histories).map(([sequenceId, history]) => ({ sequenceId, tokens: history })));
    // Different numbers of new tokens per sequence, and a sequence seen for the first time.
    const step: ForwardRequest[] = [
      { sequenceId: "short", tokens: tokens(5, 4) },
      { sequenceId: "fresh", tokens: tokens(7, 5) },
      { sequenceId: "long", tokens: tokens(1, 6) },
      { sequenceId: "mid", tokens: tokens(3, 7) },
    ];
    const batched = await lm.forward(step);
    const expected = [
      await alone(histories.short, step[0].tokens),
      await alone([], step[1].tokens),
      await alone(histories.long, step[2].tokens),
      await alone(histories.mid, step[3].tokens),
    ];
    step.forEach((request, i) => {
      assert.equal(batched[i].length, request.tokens.length * VOCAB);
      assertClose(batched[i], expected[i], request.sequenceId);
    });
    assert.equal(lm.sequenceLength("long"), 151);
    assert.equal(lm.sequenceLength("fresh"), 7);

    // The same four sequences again: the previous present tensors are fed back as the past, padding and all.
    const zeroCopyBefore = lm.stats().zeroCopyRuns;
    const next: ForwardRequest[] = step.map((request, i) => ({
      sequenceId: request.sequenceId,
      tokens: tokens(i + 1, 8),
    }));
    const again = await lm.forward(next);
    assert.equal(lm.stats().zeroCopyRuns, zeroCopyBefore + 1);
    const afterStep = {
      short: [...histories.short, ...step[0].tokens],
      fresh: step[1].tokens,
      long: [...histories.long, ...step[2].tokens],
      mid: [...histories.mid, ...step[3].tokens],
    };
    for (const [i, request] of next.entries()) {
      const history = afterStep[request.sequenceId as keyof typeof afterStep];
      assertClose(again[i], await alone(history, request.tokens), `${request.sequenceId} (fed back)`);
    }
    for (const id of ["short", "fresh", "long", "mid"]) lm.release(id);
  });

  test("truncating then re-appending gives the logits of a fresh prefill, alone and inside a batch", async () => {
    const text = tokens(30, 9);
    const [fresh] = await lm.forward([{ sequenceId: "fresh-prefill", tokens: text }]);
    const freshLogits = fresh.slice();
    lm.release("fresh-prefill");

    await lm.forward([{ sequenceId: "rolled", tokens: text.slice(0, 20) }]);
    await lm.forward([{ sequenceId: "rolled", tokens: tokens(6, 10) }]); // rejected draft tokens
    lm.truncate("rolled", 12);
    assert.equal(lm.sequenceLength("rolled"), 12);
    const [reappended] = await lm.forward([{ sequenceId: "rolled", tokens: text.slice(12) }]);
    assertClose(reappended, freshLogits.subarray(12 * VOCAB), "re-appended alone");

    // Two sequences batched together, one of them rolled back between two zero-copy steps.
    await lm.forward([
      { sequenceId: "batched", tokens: text.slice(0, 10) },
      { sequenceId: "other", tokens: tokens(4, 11) },
    ]);
    await lm.forward([
      { sequenceId: "batched", tokens: tokens(5, 12) },
      { sequenceId: "other", tokens: tokens(2, 13) },
    ]);
    lm.truncate("batched", 10);
    const [batchedLogits] = await lm.forward([
      { sequenceId: "batched", tokens: text.slice(10) },
      { sequenceId: "other", tokens: tokens(1, 14) },
    ]);
    assertClose(batchedLogits, freshLogits.subarray(10 * VOCAB), "re-appended in a batch");
    for (const id of ["rolled", "batched", "other"]) lm.release(id);
  });

  test("many rollbacks stay exact while held memory stays bounded", async () => {
    const text = tokens(120, 15);
    const [fresh] = await lm.forward([{ sequenceId: "reference", tokens: text }]);
    const freshLogits = fresh.slice();
    lm.release("reference");
    await lm.forward([{ sequenceId: "speculating", tokens: text.slice(0, 8) }]);
    let length = 8;
    while (length < text.length) {
      const accepted = Math.min(3, text.length - length);
      // Each round appends the accepted tokens plus rejected ones, then rolls the rejected ones back.
      await lm.forward([{ sequenceId: "speculating", tokens: [...text.slice(length, length + accepted), 0, 0, 0] }]);
      lm.truncate("speculating", length + accepted);
      length += accepted;
      const stats = lm.stats();
      assert.ok(stats.heldBytes <= 2 * stats.cacheBytes + 64 * lm.info.kvBytesPerToken, "held bytes stay bounded");
    }
    lm.truncate("speculating", 100);
    const [logits] = await lm.forward([{ sequenceId: "speculating", tokens: text.slice(100) }]);
    assertClose(logits, freshLogits.subarray(100 * VOCAB), "after 37 rollbacks");
    lm.release("speculating");
  });

  test("accounts KV bytes per sequence and in total, back to zero after release", async () => {
    const perToken = lm.info.kvBytesPerToken;
    await lm.forward([
      { sequenceId: "a", tokens: tokens(10, 16) },
      { sequenceId: "b", tokens: tokens(25, 17) },
    ]);
    assert.equal(lm.cacheBytes("a"), 10 * perToken);
    assert.equal(lm.cacheBytes("b"), 25 * perToken);
    assert.equal(lm.cacheBytes(), 35 * perToken);
    assert.ok(lm.stats().heldBytes >= lm.cacheBytes());
    lm.truncate("b", 5);
    assert.equal(lm.cacheBytes(), 15 * perToken);
    assert.equal(lm.cacheBytes("unknown"), 0);
    lm.release("a");
    lm.release("b");
    lm.release("b");
    assert.equal(lm.cacheBytes(), 0);
    assert.equal(lm.stats().heldBytes, 0);
    assert.equal(lm.stats().sequences, 0);
    assert.equal(lm.sequenceLength("a"), 0);
  });

  test("a forward that would exceed maxCacheBytes fails and leaves every cache intact", async () => {
    const capped = await OnnxCausalLM.load(join(dir, "tiny"), { maxCacheBytes: 30 * lm.info.kvBytesPerToken });
    try {
      const history = tokens(20, 18);
      await capped.forward([{ sequenceId: "kept", tokens: history }]);
      await assert.rejects(
        capped.forward([
          { sequenceId: "kept", tokens: tokens(4, 19) },
          { sequenceId: "newcomer", tokens: tokens(7, 20) },
        ]),
        (error: unknown) =>
          error instanceof CacheCapacityError && error.requestedBytes === 31 * lm.info.kvBytesPerToken,
      );
      assert.equal(capped.sequenceLength("kept"), 20);
      assert.equal(capped.sequenceLength("newcomer"), 0);
      assert.equal(capped.cacheBytes(), 20 * lm.info.kvBytesPerToken);
      const [logits] = await capped.forward([{ sequenceId: "kept", tokens: tokens(10, 21) }]);
      assertClose(logits, await alone(history, tokens(10, 21)), "after the refused forward");
      assert.equal(capped.cacheBytes(), 30 * lm.info.kvBytesPerToken);
    } finally {
      await capped.close();
    }
  });

  test("refuses bad requests without touching the caches", async () => {
    await lm.forward([{ sequenceId: "valid", tokens: tokens(5, 22) }]);
    await assert.rejects(lm.forward([{ sequenceId: "valid", tokens: [VOCAB] }]), RangeError);
    await assert.rejects(lm.forward([{ sequenceId: "valid", tokens: [1.5] }]), RangeError);
    await assert.rejects(
      lm.forward([
        { sequenceId: "valid", tokens: [3] },
        { sequenceId: "valid", tokens: [4] },
      ]),
      TypeError,
    );
    await assert.rejects(lm.forward([{ sequenceId: "valid", tokens: tokens(CONTEXT, 23) }]), ContextLengthError);
    assert.throws(() => lm.truncate("valid", -1), RangeError);
    assert.equal(lm.sequenceLength("valid"), 5);
    const [empty, one] = await lm.forward([
      { sequenceId: "valid", tokens: [] },
      { sequenceId: "other", tokens: [3] },
    ]);
    assert.equal(empty.length, 0);
    assert.equal(one.length, VOCAB);
    assert.equal(lm.sequenceLength("valid"), 5);
    lm.release("valid");
    lm.release("other");
  });

  test("forwards issued together run one after another on consistent caches", async () => {
    const first = tokens(9, 24);
    const second = tokens(4, 25);
    const [a, b] = await Promise.all([
      lm.forward([{ sequenceId: "concurrent", tokens: first }]),
      lm.forward([{ sequenceId: "concurrent", tokens: second }]),
    ]);
    assertClose(a[0], await alone([], first), "first");
    assertClose(b[0], await alone(first, second), "second");
    lm.release("concurrent");
  });

  test("a sequence released while its forward runs does not come back", async () => {
    const pending = lm.forward([{ sequenceId: "leaving", tokens: tokens(6, 26) }]);
    await Promise.resolve();
    lm.release("leaving");
    await pending;
    assert.equal(lm.sequenceLength("leaving"), 0);
    assert.equal(lm.cacheBytes(), 0);
  });
});

/**
 * Writes the tiny model as some exports are made: no position_ids input, positions counted inside the graph from the
 * cache width, which holds only for rows without padding or gaps.
 */
async function writeModelWithoutPositionIds(dir: string): Promise<void> {
  const weights = randomLlamaWeights({ vocab: VOCAB, dim: 32, layers: 2, heads: 4, kvHeads: 2, maxSeqLen: CONTEXT });
  const graph = buildLlamaGraph(weights);
  const firstNew = graph.nodes.length;
  // Positions past_length .. past_length + new - 1, with past_length = attention_mask width − new tokens.
  const scalar = (value: string) => graph.op("Squeeze", [value, graph.ints([0])]);
  const total = scalar(graph.op("Shape", ["attention_mask"], { start: 1, end: 2 }));
  const newTokens = scalar(graph.op("Shape", ["input_ids"], { start: 1, end: 2 }));
  const positions = graph.op("Range", [
    graph.op("Sub", [total, newTokens]),
    total,
    graph.constant(BigInt64Array.of(1n), []),
  ]);
  graph.op("Unsqueeze", [positions, graph.ints([0])], {}, { outputs: ["position_ids"] });
  // The new nodes read graph inputs only, so moving them first keeps the node list topologically sorted.
  graph.nodes.unshift(...graph.nodes.splice(firstNew));
  graph.inputs.splice(
    graph.inputs.findIndex((input) => input.name === "position_ids"),
    1,
  );
  await mkdir(join(dir, "onnx"), { recursive: true });
  await writeFile(
    join(dir, "onnx", "model.onnx"),
    serializeModel(graph, { graphName: "no-position-ids", opset: OPSET }).model,
  );
  const config = toHfConfig(weights.config, true, { variant: "random", source: "random", realVocabSize: VOCAB }, false);
  await writeFile(join(dir, "config.json"), JSON.stringify(config));
}

describe("OnnxCausalLM on a graph without position_ids", () => {
  test("runs each sequence of a batch alone, compact, and still matches unbatched forwards", async () => {
    const modelDir = join(dir, "no-position-ids");
    await writeModelWithoutPositionIds(modelDir);
    const plain = await OnnxCausalLM.load(modelDir);
    try {
      assert.equal(plain.layout.hasPositionIds, false);
      const history = { a: tokens(30, 30), b: tokens(4, 31) };
      await plain.forward([
        { sequenceId: "a", tokens: history.a },
        { sequenceId: "b", tokens: history.b },
      ]);
      await plain.forward([{ sequenceId: "a", tokens: tokens(5, 32) }]);
      plain.truncate("a", 30);
      const runsBefore = plain.stats().runs;
      const step = [
        { sequenceId: "b", tokens: tokens(3, 33) },
        { sequenceId: "a", tokens: tokens(2, 34) },
      ];
      const [b, a] = await plain.forward(step);
      assert.equal(plain.stats().runs, runsBefore + 2);
      const expected = async (id: string, past: number[], appended: number[]) => {
        await plain.forward([{ sequenceId: id, tokens: past }]);
        const [logits] = await plain.forward([{ sequenceId: id, tokens: appended }]);
        return logits;
      };
      assertClose(a, await expected("a-alone", history.a, step[1].tokens), "a");
      assertClose(b, await expected("b-alone", history.b, step[0].tokens), "b");
      // And the runtime's positions agree with the graph's own: same logits as the model with position_ids.
      assertClose(a, await alone(history.a, step[1].tokens), "a against the model with position_ids");
    } finally {
      await plain.close();
    }
  });
});
