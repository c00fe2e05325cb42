import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Matrix } from "../../services/model-builder/llama-weights.ts";
import { dequantizeMatrix, quantizeMatrix, quantizeWeights } from "../../services/model-builder/quantize.ts";
import { randomLlamaWeights } from "../../services/model-builder/random-llama.ts";
import { seededRandom } from "../support/seeded-random.ts";

function randomMatrix(rows: number, cols: number, seed: number): Matrix {
  const next = seededRandom(seed);
  return { rows, cols, data: Float32Array.from({ length: rows * cols }, () => next() * 2 - 0.7) };
}

describe("group quantization", () => {
  for (const [bits, groupSize] of [
    [4, 32],
    [4, 64],
    [8, 32],
  ] as const) {
    it(`keeps every value within half a step (${bits} bits, groups of ${groupSize}, ragged last group)`, () => {
      const m = randomMatrix(5, 100, bits * groupSize);
      const q = quantizeMatrix(m, bits, groupSize);
      const groups = Math.ceil(100 / groupSize);
      assert.equal(q.packed.length, (5 * groups * groupSize * bits) / 8);
      assert.equal(q.scales.length, 5 * groups);
      const back = dequantizeMatrix(q);
      for (let r = 0; r < 5; r++) {
        for (let c = 0; c < 100; c++) {
          const step = q.scales[r * groups + Math.floor(c / groupSize)];
          assert.ok(Math.abs(back.data[r * 100 + c] - m.data[r * 100 + c]) <= step / 2 + 1e-6);
        }
      }
      const distinct = new Set(back.data.subarray(0, Math.min(groupSize, 100)));
      assert.ok(distinct.size > Math.min(2 ** bits, groupSize) / 2, "uses most of the levels");
    });
  }

  it("represents zero exactly and all-zero groups as zeros", () => {
    const m: Matrix = { rows: 2, cols: 32, data: new Float32Array(64) };
    m.data.set(Float32Array.from({ length: 32 }, (_, i) => (i % 3 === 0 ? 0 : i / 10)));
    const back = dequantizeMatrix(quantizeMatrix(m, 4, 32));
    for (let i = 0; i < 32; i += 3) assert.equal(back.data[i], 0);
    assert.ok(back.data.subarray(32).every((x) => x === 0));
  });

  it("quantizes the block linears and leaves embedding, norms and classifier alone", () => {
    const w = randomLlamaWeights({ separateClassifier: true });
    const q = quantizeWeights(w, { bits: 4, groupSize: 32, format: "dequantized" });
    assert.equal(q.embedding, w.embedding);
    assert.equal(q.classifier, w.classifier);
    assert.equal(q.layers[0].attnNorm, w.layers[0].attnNorm);
    assert.notDeepEqual((q.layers[0].w1 as Matrix).data, (w.layers[0].w1 as Matrix).data);
  });
});
