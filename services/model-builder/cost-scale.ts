/**
 * Cost scaling: embeds a model in larger Llama shapes with zeros so that the big model computes the same function,
 * while its weight bytes and FLOPs per token are those of a real model of that size. stories260K alone is too small to
 * show what serving a real model costs; padded, it keeps its exact outputs and gains a real model's cost.
 *
 * - Residual width D -> D': the extra dims stay 0 everywhere. RMSNorm then divides by a mean over D' values, so
 *   eps' = eps·D/D' and norm weights are scaled by sqrt(D/D'), which makes every normalised value exact.
 * - Head width d -> d' = r·d: rotary pair i (rotate_half, theta_i = base^(-2i/d)) moves to pair i·r, which has the
 *   same frequency in d' dims; the 1/sqrt(d) score scale becomes 1/sqrt(d'), so wq is multiplied by sqrt(d'/d).
 * - Extra query heads, FFN units, layers (identity: every weight 0 adds 0 to the residual) and vocabulary rows are 0;
 *   the extra ids get a logits bias of MASKED_LOGIT, so their probability is exactly 0 for every consumer.
 * - Medusa heads: their residual blocks and projections are padded like the layers.
 * - Key/value heads: a new kv head serves the query heads of its group; it copies the original kv head those query
 *   heads used (so multi-head shapes can host a grouped-query model).
 */
import { isQuantized, type Linear, type LlamaConfig, type LlamaWeights, type Matrix } from "./llama-weights.ts";

/** Logit of padded vocabulary ids: exp(MASKED_LOGIT - max) is exactly 0 in float32 and float64. */
export const MASKED_LOGIT = -1e9;

export type LlamaShape = Pick<
  LlamaConfig,
  "dim" | "hiddenDim" | "nLayers" | "nHeads" | "nKvHeads" | "headDim" | "vocabSize"
>;

/** Shapes of Karpathy's stories110M (Llama 2 architecture, 32000-token vocabulary, multi-head attention). */
export const STORIES_110M: LlamaShape = {
  dim: 768,
  hiddenDim: 2048,
  nLayers: 12,
  nHeads: 12,
  nKvHeads: 12,
  headDim: 64,
  vocabSize: 32000,
};

function dense(linear: Linear): Matrix {
  if (isQuantized(linear)) throw new Error("cost scaling needs dense weights (dequantize first)");
  return linear;
}

/** Copies `src` into a zero matrix of the new shape, row r to rowMap(r) and column c to colMap(c), times `scale`. */
function embed(
  src: Matrix,
  rows: number,
  cols: number,
  rowMap: (r: number) => number,
  colMap: (c: number) => number,
  scale = 1,
): Matrix {
  const out = new Float32Array(rows * cols);
  const colIndex = Int32Array.from({ length: src.cols }, (_, c) => colMap(c));
  for (let r = 0; r < src.rows; r++) {
    const base = rowMap(r) * cols;
    const from = r * src.cols;
    for (let c = 0; c < src.cols; c++) out[base + colIndex[c]] = src.data[from + c] * scale;
  }
  return { rows, cols, data: out };
}

function scaledVector(v: Float32Array, length: number, scale: number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < v.length; i++) out[i] = v[i] * scale;
  return out;
}

const identity = (i: number) => i;

/** Pads `weights` with zeros to `shape` (see the module comment). The result's greedy output equals the original's. */
export function costScale(weights: LlamaWeights, shape: LlamaShape): LlamaWeights {
  const c = weights.config;
  const ratio = shape.headDim / c.headDim;
  const groupOld = c.nHeads / c.nKvHeads;
  const groupNew = shape.nHeads / shape.nKvHeads;
  const fits =
    shape.dim >= c.dim &&
    shape.hiddenDim >= c.hiddenDim &&
    shape.nLayers >= c.nLayers &&
    shape.nHeads >= c.nHeads &&
    shape.vocabSize >= c.vocabSize &&
    Number.isInteger(ratio) &&
    Number.isInteger(groupNew);
  if (!fits) throw new Error(`cannot embed ${JSON.stringify(c)} in ${JSON.stringify(shape)}`);

  // Original kv head feeding each new kv head (-1: unused). All original query heads of one new group must agree.
  const kvSource = new Int32Array(shape.nKvHeads).fill(-1);
  for (let h = 0; h < c.nHeads; h++) {
    const target = Math.floor(h / groupNew);
    const source = Math.floor(h / groupOld);
    if (kvSource[target] !== -1 && kvSource[target] !== source) {
      throw new Error(`query heads of new kv head ${target} use different original kv heads`);
    }
    kvSource[target] = source;
  }

  const d = c.headDim;
  const half = d / 2;
  const halfNew = shape.headDim / 2;
  // Dim i of an original head -> its dim in a new head: rotary pair i -> pair i·ratio, in the same half.
  const headDimMap = (i: number) => (i < half ? i * ratio : halfNew + (i - half) * ratio);
  const qMap = (r: number) => Math.floor(r / d) * shape.headDim + headDimMap(r % d);
  const kvRows = (m: Matrix): Matrix => {
    const out = new Float32Array(shape.nKvHeads * shape.headDim * shape.dim);
    kvSource.forEach((source, j) => {
      if (source < 0) return;
      const one = embed(
        { rows: d, cols: c.dim, data: m.data.subarray(source * d * c.dim, (source + 1) * d * c.dim) },
        shape.headDim,
        shape.dim,
        headDimMap,
        identity,
      );
      out.set(one.data, j * shape.headDim * shape.dim);
    });
    return { rows: shape.nKvHeads * shape.headDim, cols: shape.dim, data: out };
  };

  const normScale = Math.sqrt(c.dim / shape.dim);
  const qDim = shape.nHeads * shape.headDim;
  const layers = weights.layers.map((l) => ({
    attnNorm: scaledVector(l.attnNorm, shape.dim, normScale),
    wq: embed(dense(l.wq), qDim, shape.dim, qMap, identity, Math.sqrt(ratio)),
    wk: kvRows(dense(l.wk)),
    wv: kvRows(dense(l.wv)),
    wo: embed(dense(l.wo), shape.dim, qDim, identity, qMap),
    ffnNorm: scaledVector(l.ffnNorm, shape.dim, normScale),
    w1: embed(dense(l.w1), shape.hiddenDim, shape.dim, identity, identity),
    w2: embed(dense(l.w2), shape.dim, shape.hiddenDim, identity, identity),
    w3: embed(dense(l.w3), shape.hiddenDim, shape.dim, identity, identity),
  }));
  const zeros = (rows: number, cols: number): Matrix => ({ rows, cols, data: new Float32Array(rows * cols) });
  for (let i = c.nLayers; i < shape.nLayers; i++) {
    layers.push({
      attnNorm: new Float32Array(shape.dim),
      wq: zeros(qDim, shape.dim),
      wk: zeros(shape.nKvHeads * shape.headDim, shape.dim),
      wv: zeros(shape.nKvHeads * shape.headDim, shape.dim),
      wo: zeros(shape.dim, qDim),
      ffnNorm: new Float32Array(shape.dim),
      w1: zeros(shape.hiddenDim, shape.dim),
      w2: zeros(shape.dim, shape.hiddenDim),
      w3: zeros(shape.hiddenDim, shape.dim),
    });
  }

  const logitsBias = new Float32Array(shape.vocabSize);
  if (weights.logitsBias) logitsBias.set(weights.logitsBias);
  logitsBias.fill(MASKED_LOGIT, c.vocabSize);
  const padRows = (m: Matrix) => embed(m, shape.vocabSize, shape.dim, identity, identity);
  return {
    config: { ...c, ...shape, normEps: (c.normEps * c.dim) / shape.dim },
    embedding: padRows(weights.embedding),
    layers,
    finalNorm: scaledVector(weights.finalNorm, shape.dim, normScale),
    classifier: weights.classifier === null ? null : padRows(dense(weights.classifier)),
    logitsBias,
    // The extra dims of the normalised state are 0, and SiLU(0) = 0: padded heads compute the same logits.
    ...(weights.medusa && {
      medusa: weights.medusa.map((head) => ({
        residual: embed(head.residual, shape.dim, shape.dim, identity, identity),
        bias: scaledVector(head.bias, shape.dim, 1),
        projection: head.projection && padRows(head.projection),
      })),
    }),
  };
}
