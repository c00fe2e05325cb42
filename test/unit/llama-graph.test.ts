import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { InferenceSession, Tensor } from "onnxruntime-node";
import { costScale, MASKED_LOGIT } from "../../services/model-builder/cost-scale.ts";
import { earlyExit, type LlamaWeights } from "../../services/model-builder/llama-weights.ts";
import { MODEL_FILE, writeModelDir } from "../../services/model-builder/model-dir.ts";
import { quantizeWeights } from "../../services/model-builder/quantize.ts";
import { buildRandomLlama, randomLlamaWeights } from "../../services/model-builder/random-llama.ts";
import { referenceLogits } from "../support/llama-reference.ts";

interface Row {
  /** Tokens already in the cache. */
  readonly past: readonly number[];
  /** Tokens appended in the batched run. */
  readonly fresh: readonly number[];
}

const int64 = (rows: readonly (readonly number[])[]) =>
  new Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [rows.length, rows[0].length]);

/** One session run over a batch; each row gives its past (already cached) KV per layer, left-padded to pastLength. */
async function runBatch(
  session: InferenceSession,
  w: LlamaWeights,
  rows: readonly Row[],
  caches: readonly (Record<string, Tensor> | null)[],
): Promise<Float32Array[]> {
  const c = w.config;
  const pastLength = Math.max(...rows.map((r) => r.past.length));
  const width = Math.max(1, ...rows.map((r) => r.fresh.length));
  const feeds: Record<string, Tensor> = {
    input_ids: int64(rows.map((r) => Array.from({ length: width }, (_, i) => r.fresh[i] ?? 0))),
    attention_mask: int64(
      rows.map((r) => [
        ...Array.from({ length: pastLength }, (_, t) => (t >= pastLength - r.past.length ? 1 : 0)),
        ...Array.from({ length: width }, (_, i) => (i < r.fresh.length ? 1 : 0)),
      ]),
    ),
    position_ids: int64(rows.map((r) => Array.from({ length: width }, (_, i) => r.past.length + i))),
  };
  const d = c.headDim;
  for (let l = 0; l < c.nLayers; l++) {
    for (const kind of ["key", "value"]) {
      const data = new Float32Array(rows.length * c.nKvHeads * pastLength * d);
      rows.forEach((r, b) => {
        const cache = caches[b];
        if (!cache) return;
        const src = cache[`present.${l}.${kind}`].data as Float32Array;
        const len = r.past.length;
        for (let h = 0; h < c.nKvHeads; h++) {
          const dst = ((b * c.nKvHeads + h) * pastLength + (pastLength - len)) * d;
          data.set(src.subarray(h * len * d, (h + 1) * len * d), dst);
        }
      });
      feeds[`past_key_values.${l}.${kind}`] = new Tensor("float32", data, [rows.length, c.nKvHeads, pastLength, d]);
    }
  }
  const out = await session.run(feeds);
  const logits = out.logits.data as Float32Array;
  const v = c.vocabSize;
  return rows.map((_, b) => logits.slice(b * width * v, (b + 1) * width * v));
}

async function prefill(session: InferenceSession, w: LlamaWeights, tokens: readonly number[]) {
  const c = w.config;
  const feeds: Record<string, Tensor> = {
    input_ids: int64([tokens]),
    attention_mask: int64([tokens.map(() => 1)]),
    position_ids: int64([tokens.map((_, i) => i)]),
  };
  for (let l = 0; l < c.nLayers; l++) {
    for (const kind of ["key", "value"]) {
      feeds[`past_key_values.${l}.${kind}`] = new Tensor("float32", new Float32Array(0), [1, c.nKvHeads, 0, c.headDim]);
    }
  }
  const out = await session.run(feeds);
  return { logits: out.logits.data as Float32Array, present: out };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

describe("Llama ONNX graph", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "llama-graph-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function session(name: string, w: LlamaWeights): Promise<InferenceSession> {
    await writeModelDir(join(dir, name), w, { variant: name, source: "random", realVocabSize: w.config.realVocabSize });
    return InferenceSession.create(join(dir, name, MODEL_FILE));
  }

  const tokens = [1, 17, 5, 42, 63, 8, 30, 2, 11];

  for (const [label, options] of [
    ["grouped-query, tied classifier", { heads: 4, kvHeads: 2 }],
    ["multi-query, separate classifier", { heads: 4, kvHeads: 1, separateClassifier: true }],
    ["multi-head", { heads: 2, kvHeads: 2, layers: 3 }],
  ] as const) {
    it(`matches an independent float64 forward pass (${label})`, async () => {
      const w = randomLlamaWeights({ ...options, seed: 7 });
      const s = await session(`ref-${label.replaceAll(/\W/g, "")}`, w);
      const { logits } = await prefill(s, w, tokens);
      const expected = referenceLogits(w, tokens);
      assert.ok(
        maxAbsDiff(
          logits,
          expected.flatMap((row) => [...row]),
        ) < 1e-4,
      );
    });
  }

  it("gives a padded batch (left-padded pasts, right-padded new tokens) the logits of unpadded runs", async () => {
    const w = randomLlamaWeights({ seed: 3 });
    const s = await session("batch", w);
    const rows: Row[] = [
      { past: [1, 5, 9, 13, 17], fresh: [21, 25, 29] },
      { past: [1, 6], fresh: [7] },
      { past: [], fresh: [1, 2, 3, 4] },
      { past: [1, 3, 3], fresh: [] }, // an idle row: all of its new positions are padding
    ];
    const caches = await Promise.all(
      rows.map(async (r) => (r.past.length ? (await prefill(s, w, r.past)).present : null)),
    );
    const batched = await runBatch(s, w, rows, caches);
    const v = w.config.vocabSize;
    for (const [b, r] of rows.entries()) {
      assert.ok(
        batched[b].every((x) => Number.isFinite(x)),
        `row ${b} has non-finite logits`,
      );
      if (r.fresh.length === 0) continue;
      const alone = (await prefill(s, w, [...r.past, ...r.fresh])).logits;
      const expected = alone.subarray(r.past.length * v);
      assert.ok(maxAbsDiff(batched[b].subarray(0, r.fresh.length * v), expected) <= 1e-4, `row ${b}`);
    }
  });

  it("cost-scaled weights compute the same logits on real ids and mask the padded ids", async () => {
    const w = randomLlamaWeights({ seed: 5, heads: 4, kvHeads: 2, dim: 32, vocab: 64 });
    const big = costScale(w, {
      dim: 96,
      hiddenDim: 200,
      nLayers: 4,
      nHeads: 6,
      nKvHeads: 6,
      headDim: 16,
      vocabSize: 100,
    });
    const small = (await prefill(await session("small", w), w, tokens)).logits;
    const scaled = (await prefill(await session("scaled", big), big, tokens)).logits;
    for (let p = 0; p < tokens.length; p++) {
      const row = scaled.subarray(p * 100, (p + 1) * 100);
      assert.ok(maxAbsDiff(row.subarray(0, 64), small.subarray(p * 64, (p + 1) * 64)) < 1e-4);
      assert.ok(row.subarray(64).every((x) => x === MASKED_LOGIT));
    }
  });

  it("runs int4 weights as MatMulNBits with the logits of their dequantized float copy", async () => {
    const w = randomLlamaWeights({ seed: 9, dim: 64, hiddenDim: 100 });
    for (const groupSize of [32, 64]) {
      const packed = quantizeWeights(w, { bits: 4, groupSize, format: "matmul-nbits" });
      const float = quantizeWeights(w, { bits: 4, groupSize, format: "dequantized" });
      const a = (await prefill(await session(`nbits${groupSize}`, packed), packed, tokens)).logits;
      const b = (await prefill(await session(`deq${groupSize}`, float), float, tokens)).logits;
      assert.ok(maxAbsDiff(a, b) < 1e-3, `group ${groupSize}`);
      assert.ok(maxAbsDiff(b, (await prefill(await session("exact", w), w, tokens)).logits) > 1e-3);
    }
  });

  it("early exit keeps the first layers, the final norm and the classifier", async () => {
    const w = randomLlamaWeights({ seed: 11, layers: 3 });
    const exit = earlyExit(w, 2);
    const { logits } = await prefill(await session("exit", exit), exit, tokens);
    assert.ok(
      maxAbsDiff(
        logits,
        referenceLogits(exit, tokens).flatMap((row) => [...row]),
      ) < 1e-4,
    );
    assert.equal(exit.layers.length, 2);
  });

  it("writes a random test model directory that onnxruntime loads", async () => {
    const model = await buildRandomLlama(join(dir, "random"), { vocab: 32, dim: 16, layers: 1, heads: 2, kvHeads: 1 });
    const s = await InferenceSession.create(join(model.dir, MODEL_FILE));
    assert.deepEqual([...s.inputNames].sort(), [
      "attention_mask",
      "input_ids",
      "past_key_values.0.key",
      "past_key_values.0.value",
      "position_ids",
    ]);
    assert.deepEqual([...s.outputNames].sort(), ["logits", "present.0.key", "present.0.value"]);
  });
});
