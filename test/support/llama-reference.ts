/**
 * A plain, slow Llama forward pass in float64 over `LlamaWeights` (Hugging Face conventions: rotate_half RoPE, query
 * head h reads kv head floor(h / group)), written independently of the ONNX graph so tests can check the graph.
 */
import { isQuantized, type Linear, type LlamaWeights } from "../../services/model-builder/llama-weights.ts";

function matVec(w: Linear, x: Float64Array): Float64Array {
  if (isQuantized(w)) throw new Error("reference forward takes dense weights");
  const out = new Float64Array(w.rows);
  for (let r = 0; r < w.rows; r++) {
    let sum = 0;
    for (let c = 0; c < w.cols; c++) sum += w.data[r * w.cols + c] * x[c];
    out[r] = sum;
  }
  return out;
}

function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let mean = 0;
  for (const v of x) mean += v * v;
  const scale = 1 / Math.sqrt(mean / x.length + eps);
  return x.map((v, i) => v * scale * w[i]);
}

function rope(vec: Float64Array, heads: number, d: number, pos: number, theta: number): void {
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < d / 2; j++) {
      const angle = pos * theta ** ((-2 * j) / d);
      const a = vec[h * d + j];
      const b = vec[h * d + j + d / 2];
      vec[h * d + j] = a * Math.cos(angle) - b * Math.sin(angle);
      vec[h * d + j + d / 2] = b * Math.cos(angle) + a * Math.sin(angle);
    }
  }
}

/** Logits of every position of `tokens` (positions 0..n-1), row-major [n, vocab]. */
export function referenceLogits(weights: LlamaWeights, tokens: readonly number[]): Float64Array[] {
  const c = weights.config;
  const d = c.headDim;
  const group = c.nHeads / c.nKvHeads;
  const keys: Float64Array[][] = weights.layers.map(() => []);
  const values: Float64Array[][] = weights.layers.map(() => []);
  return tokens.map((token, pos) => {
    let x = Float64Array.from(weights.embedding.data.subarray(token * c.dim, (token + 1) * c.dim));
    weights.layers.forEach((layer, l) => {
      const h = rmsNorm(x, layer.attnNorm, c.normEps);
      const q = matVec(layer.wq, h);
      const k = matVec(layer.wk, h);
      rope(q, c.nHeads, d, pos, c.ropeTheta);
      rope(k, c.nKvHeads, d, pos, c.ropeTheta);
      keys[l].push(k);
      values[l].push(matVec(layer.wv, h));
      const context = new Float64Array(c.nHeads * d);
      for (let head = 0; head < c.nHeads; head++) {
        const kv = Math.floor(head / group) * d;
        const scores = keys[l].map((key) => {
          let s = 0;
          for (let i = 0; i < d; i++) s += q[head * d + i] * key[kv + i];
          return s / Math.sqrt(d);
        });
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const total = e.reduce((a, b) => a + b, 0);
        values[l].forEach((v, t) => {
          for (let i = 0; i < d; i++) context[head * d + i] += (e[t] / total) * v[kv + i];
        });
      }
      const attention = matVec(layer.wo, context);
      x = x.map((v, i) => v + attention[i]);
      const f = rmsNorm(x, layer.ffnNorm, c.normEps);
      const gate = matVec(layer.w1, f);
      const up = matVec(layer.w3, f);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
      const down = matVec(layer.w2, act);
      x = x.map((v, i) => v + down[i]);
    });
    const logits = matVec(weights.classifier ?? weights.embedding, rmsNorm(x, weights.finalNorm, c.normEps));
    return weights.logitsBias ? logits.map((v, i) => v + (weights.logitsBias as Float32Array)[i]) : logits;
  });
}
