import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  distribution,
  drawSparse,
  drawToken,
  GREEDY,
  oneHot,
  probabilityOf,
  sparse,
} from "../../services/engine/sampling.ts";

const logits = Float32Array.of(2, 1, 0, 3, -1, Number.NEGATIVE_INFINITY);

function softmax(values: number[]): number[] {
  const max = Math.max(...values);
  const e = values.map((v) => Math.exp(v - max));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / total);
}

function assertClose(actual: ArrayLike<number>, expected: number[]): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(actual[i] - expected[i]) < 1e-6, `index ${i}`);
}

describe("distribution", () => {
  it("is the softmax at temperature 1, with masked ids at 0", () => {
    assertClose(distribution(logits, { temperature: 1 }), [...softmax([2, 1, 0, 3, -1]), 0]);
  });

  it("divides logits by the temperature", () => {
    assertClose(distribution(logits, { temperature: 0.5 }), [...softmax([4, 2, 0, 6, -2]), 0]);
  });

  it("is one-hot on the argmax when greedy", () => {
    assert.deepEqual([...distribution(logits, GREEDY)], [0, 0, 0, 1, 0, 0]);
  });

  it("keeps the k most probable tokens with top-k", () => {
    const [a, b] = softmax([3, 2]);
    assertClose(distribution(logits, { temperature: 1, topK: 2 }), [b, 0, 0, a, 0, 0]);
  });

  it("keeps the smallest nucleus reaching top-p", () => {
    const p = softmax([2, 1, 0, 3, -1]);
    // Mass of {3} is p[3] ≈ 0.64 < 0.7, of {3, 0} ≈ 0.87 ≥ 0.7.
    const kept = p[3] + p[0];
    assertClose(distribution(logits, { temperature: 1, topP: 0.7 }), [p[0] / kept, 0, 0, p[3] / kept, 0, 0]);
  });

  it("applies top-p to what top-k kept", () => {
    const [a, b] = softmax([3, 2]);
    assert.ok(a < 0.75);
    assertClose(distribution(logits, { temperature: 1, topK: 2, topP: 0.75 }), [b, 0, 0, a, 0, 0]);
    assertClose(distribution(logits, { temperature: 1, topK: 2, topP: 0.7 }), [0, 0, 0, 1, 0, 0]);
  });

  it("breaks top-k ties by the lower id", () => {
    assert.deepEqual([...distribution(Float32Array.of(1, 1, 1), { temperature: 1, topK: 1 })], [1, 0, 0]);
  });
});

describe("drawing", () => {
  it("inverts the cumulative distribution", () => {
    const weights = Float32Array.of(0.25, 0, 0.5, 0.25);
    assert.equal(drawToken(weights, 0), 0);
    assert.equal(drawToken(weights, 0.2499), 0);
    assert.equal(drawToken(weights, 0.25), 2);
    assert.equal(drawToken(weights, 0.7499), 2);
    assert.equal(drawToken(weights, 0.75), 3);
    assert.equal(drawToken(weights, 0.999999), 3);
  });

  it("accepts unnormalised weights and refuses an empty distribution", () => {
    assert.equal(drawToken([0, 2, 2], 0.6), 2);
    assert.throws(() => drawToken([0, 0], 0.5), /no mass/);
  });

  it("draws the same token from the sparse form of a distribution", () => {
    const dense = distribution(logits, { temperature: 1 });
    const q = sparse(dense);
    assert.deepEqual([...q.ids], [0, 1, 2, 3, 4]);
    for (const u of [0, 0.1, 0.3, 0.5, 0.9, 0.99]) assert.equal(drawSparse(q, u), drawToken(dense, u));
    assert.equal(probabilityOf(q, 5), 0);
    assert.equal(probabilityOf(oneHot(7), 7), 1);
  });
});
