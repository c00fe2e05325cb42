import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import type { LlamaWeights, Matrix } from "../../services/model-builder/llama-weights.ts";
import { parseLlama2c } from "../../services/model-builder/llama2c.ts";
import { modelDataFile } from "../support/model-data.ts";

interface Shape {
  dim: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  seqLen: number;
}

/** Random section contents (value = a distinct number per float, so misplaced sections cannot compare equal). */
function sections(s: Shape, shared: boolean): Record<string, Float32Array> {
  const hd = s.dim / s.heads;
  const sizes: Record<string, number> = {
    embedding: s.vocab * s.dim,
    attnNorm: s.layers * s.dim,
    wq: s.layers * s.dim * s.dim,
    wk: s.layers * s.kvHeads * hd * s.dim,
    wv: s.layers * s.kvHeads * hd * s.dim,
    wo: s.layers * s.dim * s.dim,
    ffnNorm: s.layers * s.dim,
    w1: s.layers * s.hidden * s.dim,
    w2: s.layers * s.dim * s.hidden,
    w3: s.layers * s.hidden * s.dim,
    finalNorm: s.dim,
    classifier: shared ? 0 : s.vocab * s.dim,
  };
  let next = 0;
  return Object.fromEntries(
    Object.entries(sizes).map(([k, n]) => [k, Float32Array.from({ length: n }, () => (next++ % 9973) / 9973)]),
  );
}

function header(s: Shape, vocab: number): Int32Array {
  return Int32Array.of(s.dim, s.hidden, s.layers, s.heads, s.kvHeads, vocab, s.seqLen);
}

function concat(parts: ArrayBufferView[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const p of parts) {
    out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), offset);
    offset += p.byteLength;
  }
  return out;
}

function legacyFile(s: Shape, w: Record<string, Float32Array>, shared: boolean): Uint8Array {
  const freqCis = new Float32Array(s.seqLen * (s.dim / s.heads));
  const order = ["embedding", "attnNorm", "wq", "wk", "wv", "wo", "ffnNorm", "w1", "w2", "w3", "finalNorm"];
  return concat([header(s, shared ? s.vocab : -s.vocab), ...order.map((k) => w[k]), freqCis, w.classifier]);
}

function v1File(s: Shape, w: Record<string, Float32Array>, shared: boolean): Uint8Array {
  const head = new Uint8Array(256);
  const view = new DataView(head.buffer);
  view.setUint32(0, 0x616b3432, true);
  view.setInt32(4, 1, true);
  for (const [i, v] of header(s, s.vocab).entries()) view.setInt32(8 + 4 * i, v, true);
  view.setUint8(36, shared ? 1 : 0);
  const order = ["attnNorm", "ffnNorm", "finalNorm", "embedding", "wq", "wk", "wv", "wo", "w1", "w2", "w3"];
  return concat([head, ...order.map((k) => w[k]), w.classifier]);
}

function flatten(w: LlamaWeights): Float32Array[] {
  const m = (x: Matrix | unknown) => (x as Matrix).data;
  return [
    w.embedding.data,
    w.finalNorm,
    ...(w.classifier ? [m(w.classifier)] : []),
    ...w.layers.flatMap((l) => [l.attnNorm, l.ffnNorm, ...[l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3].map(m)]),
  ];
}

describe("llama2.c checkpoint reader", () => {
  it("reads the legacy and the version 1 stories260K files to identical weights", async () => {
    const legacy = parseLlama2c(await readFile(modelDataFile("stories260K.bin")));
    const v1 = parseLlama2c(await readFile(modelDataFile("stories260K.v1.bin")));
    assert.equal(legacy.format, "legacy");
    assert.equal(v1.format, "v1");
    assert.deepEqual(legacy.weights.config, v1.weights.config);
    assert.deepEqual(
      { ...legacy.weights.config },
      {
        dim: 64,
        hiddenDim: 172,
        nLayers: 5,
        nHeads: 8,
        nKvHeads: 4,
        headDim: 8,
        vocabSize: 512,
        realVocabSize: 512,
        maxSeqLen: 512,
        normEps: 1e-5,
        ropeTheta: 10000,
      },
    );
    assert.equal(legacy.weights.classifier, null);
    assert.deepEqual(flatten(legacy.weights), flatten(v1.weights));
  });

  for (const shared of [true, false]) {
    it(`reads synthetic legacy and v1 files with grouped-query attention (${shared ? "shared" : "separate"} classifier)`, () => {
      const s: Shape = { dim: 16, hidden: 24, layers: 2, heads: 4, kvHeads: 2, vocab: 10, seqLen: 8 };
      const raw = sections(s, shared);
      const legacy = parseLlama2c(legacyFile(s, raw, shared)).weights;
      const v1 = parseLlama2c(v1File(s, raw, shared)).weights;
      assert.deepEqual(flatten(legacy), flatten(v1));
      assert.equal(legacy.classifier === null, shared);
      if (!shared) assert.deepEqual((legacy.classifier as Matrix).data, raw.classifier);
      assert.deepEqual((legacy.layers[1].w2 as Matrix).data, raw.w2.subarray(s.dim * s.hidden));
      // Rows of each 4-dim head go from adjacent pairs (0,1)(2,3) to halves (0,2)(1,3): llama2.c row order 0,2,1,3.
      const wk = legacy.layers[0].wk as Matrix;
      assert.equal(wk.rows, s.kvHeads * 4);
      for (const [hf, l2c] of [0, 2, 1, 3, 4, 6, 5, 7].entries()) {
        assert.deepEqual(
          wk.data.subarray(hf * s.dim, (hf + 1) * s.dim),
          raw.wk.subarray(l2c * s.dim, (l2c + 1) * s.dim),
        );
      }
    });
  }

  it("rejects files whose size does not match their header", () => {
    const s: Shape = { dim: 8, hidden: 8, layers: 1, heads: 2, kvHeads: 2, vocab: 4, seqLen: 4 };
    const file = legacyFile(s, sections(s, true), true);
    assert.throws(() => parseLlama2c(file.subarray(0, file.length - 4)), /header implies/);
    assert.throws(() => parseLlama2c(new Uint8Array(12)), /shorter than its header/);
  });
});
