/**
 * Llama-architecture decoder graph in the Hugging Face Optimum / transformers.js layout:
 *   inputs  input_ids [batch, seq] int64, attention_mask [batch, past+seq (+ seq·seq)] int64,
 *           position_ids [batch, seq] int64, past_key_values.{i}.key|value [batch, kv_heads, past, head_dim] float32
 *   outputs logits [batch, seq, vocab], present.{i}.key|value [batch, kv_heads, past+seq, head_dim]
 * RMSNorm, RoPE with rotate_half, grouped-query attention that broadcasts each key/value head over its group of query
 * heads (no copies), SwiGLU. The causal mask is built from attention_mask by cache index, so rows whose past is
 * left-padded and whose new tokens are right-padded work in one batch; masked scores get a large finite negative value
 * so that no row, even an all-padding one, turns into NaN.
 *
 * Tree attention (token trees scored in one forward) rides at the end of attention_mask: after its past+seq columns a
 * row may carry a seq×seq block, row-major, saying which new positions each new position may see (its ancestors and
 * itself); it narrows the causal mask among the new positions and leaves the past visible. Without the block the mask
 * is causal, so Optimum/transformers.js callers, which feed past+seq columns, get exactly the plain decoder. It is not
 * a separate input because both would refuse the model then: transformers.js feeds every input a graph declares or
 * fails, and onnxruntime-node never passes an input that has a default. The width's dimension name says the graph
 * reads the block (TREE_MASK_WIDTH); the cache length comes from the past tensors instead of the mask's width.
 */

import { TREE_MASK_WIDTH } from "../runtime/decoder-layout.ts";
import {
  isQuantized,
  type Linear,
  type LlamaWeights,
  type Matrix,
  type MedusaHead,
  transpose,
} from "./llama-weights.ts";
import { DataType, type Dim, type OnnxGraph as Graph, OnnxGraph } from "./onnx-graph.ts";

export const OPSET = 17;
export const MICROSOFT_OPSET = 1;
/** Additive score of masked positions: exp() of it underflows to exactly 0 next to any real score. */
export const MASKED_SCORE = -1e9;

const B = "batch_size";
const S = "sequence_length";
const P = "past_sequence_length";
const T = "past_sequence_length + sequence_length";
const INT64_MAX = 0x7fffffffffffffffn;

function linearWeight(g: Graph, name: string, w: Linear, x: string): string {
  if (isQuantized(w)) {
    const groups = Math.ceil(w.cols / w.groupSize);
    const packed = g.initializer(`${name}.qweight`, w.packed, [w.rows, groups, (w.groupSize * w.bits) / 8]);
    const scales = g.initializer(`${name}.scales`, w.scales, [w.rows * groups]);
    const zeroPoints = g.initializer(`${name}.zero_points`, w.zeroPoints, [w.zeroPoints.length]);
    return g.op(
      "MatMulNBits",
      [x, packed, scales, zeroPoints],
      { K: w.cols, N: w.rows, bits: w.bits, block_size: w.groupSize },
      { domain: "com.microsoft" },
    );
  }
  // MatMul wants [in, out]; the weights are kept [out, in] like nn.Linear.
  const t = transpose(w);
  return g.op("MatMul", [x, g.initializer(name, t.data, [t.rows, t.cols])]);
}

function rmsNorm(g: Graph, x: string, weight: Float32Array, name: string, eps: number): string {
  // The Pow/ReduceMean/Add/Sqrt/Div/Mul pattern that ONNX Runtime fuses into SimplifiedLayerNormalization.
  const meanSquare = g.op("ReduceMean", [g.op("Pow", [x, g.scalar(2)])], { axes: [-1], keepdims: 1 });
  const rms = g.op("Sqrt", [g.op("Add", [meanSquare, g.scalar(eps)])]);
  const w = g.initializer(name, weight, [weight.length]);
  return g.op("Mul", [g.op("Div", [x, rms]), w]);
}

/** x [b, s, heads, d] rotated by cos/sin [b, s, 1, d] with the rotate_half convention. */
function rope(g: Graph, x: string, cos: string, sin: string, headDim: number): string {
  const half = headDim / 2;
  const [x1, x2] = g.opN("Split", [x, g.ints([half, half])], { axis: -1 }, { outputs: 2 });
  const rotated = g.op("Concat", [g.op("Neg", [x2]), x1], { axis: -1 });
  return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rotated, sin])]);
}

/** Builds the decoder graph of `weights`. */
export function buildLlamaGraph(weights: LlamaWeights): OnnxGraph {
  const c = weights.config;
  const g = new OnnxGraph();
  const group = c.nHeads / c.nKvHeads;
  const d = c.headDim;

  const inputIds = g.input("input_ids", DataType.INT64, [B, S]);
  const attentionMask = g.input("attention_mask", DataType.INT64, [B, TREE_MASK_WIDTH]);
  const positionIds = g.input("position_ids", DataType.INT64, [B, S]);
  const kvDims: Dim[] = [B, c.nKvHeads, P, d];
  const past = weights.layers.map((_, i) => ({
    key: g.input(`past_key_values.${i}.key`, DataType.FLOAT, kvDims),
    value: g.input(`past_key_values.${i}.value`, DataType.FLOAT, kvDims),
  }));

  // Rotary angles from position ids: theta_j = base^(-2j/d), same table for both halves (rotate_half).
  const invFreq = Float32Array.from({ length: d / 2 }, (_, j) => c.ropeTheta ** ((-2 * j) / d));
  const positions = g.op("Unsqueeze", [g.op("Cast", [positionIds], { to: DataType.FLOAT }), g.ints([2])]);
  const angles = g.op("Mul", [positions, g.constant(invFreq)]);
  const emb = g.op("Concat", [angles, angles], { axis: -1 });
  const cos = g.op("Unsqueeze", [g.op("Cos", [emb]), g.ints([2])]);
  const sin = g.op("Unsqueeze", [g.op("Sin", [emb]), g.ints([2])]);

  // Additive mask [b, 1, 1, s, T]: key t is visible to new token i iff t <= past + i, attention_mask[t] = 1 and, for a
  // new key, the tree block lets i see it.
  const seq = g.op("Shape", [inputIds], { start: 1, end: 2 });
  const pastLen = g.op("Shape", [past[0].key], { start: 2, end: 3 });
  const total = g.op("Add", [pastLen, seq]);
  const zero = g.constant(BigInt64Array.of(0n), []);
  const one = g.constant(BigInt64Array.of(1n), []);
  const scalarOf = (v: string) => g.op("Squeeze", [v, g.ints([0])]);
  const keyIndex = g.op("Range", [zero, scalarOf(total), one]);
  const queryIndex = g.op("Add", [g.op("Range", [zero, scalarOf(seq), one]), pastLen]);
  const causal = g.op("LessOrEqual", [
    g.op("Unsqueeze", [keyIndex, g.ints([0])]),
    g.op("Unsqueeze", [queryIndex, g.ints([1])]),
  ]);
  const axis1 = g.ints([1]);
  const keyMask = g.op("Slice", [attentionMask, g.ints([0]), total, axis1]);
  const notPadding = g.op("Unsqueeze", [g.op("Cast", [keyMask], { to: DataType.BOOL }), g.ints([1, 2, 3])]);
  // The tree block, or ones where the row carries none (padding the missing block with ones), [b, s, s]; then
  // widened over the past with ones, [b, s, T].
  const block = g.op("Slice", [attentionMask, total, g.constant(BigInt64Array.of(INT64_MAX)), axis1]);
  const blockSize = g.op("Mul", [seq, seq]);
  const missing = g.op("Sub", [blockSize, g.op("Shape", [block], { start: 1, end: 2 })]);
  const fullBlock = g.op("Pad", [block, g.op("Concat", [g.ints([0, 0, 0]), missing], { axis: 0 }), one]);
  const square = g.op("Reshape", [fullBlock, g.op("Concat", [g.ints([0]), seq, seq], { axis: 0 })]);
  const overPast = g.op("Concat", [g.ints([0, 0]), pastLen, g.ints([0, 0, 0])], { axis: 0 });
  const tree = g.op("Cast", [g.op("Pad", [square, overPast, one])], { to: DataType.BOOL });
  const inTree = g.op("Unsqueeze", [tree, g.ints([1, 2])]);
  const visible = g.op("And", [g.op("And", [causal, notPadding]), inTree]);
  const maskBias = g.op("Where", [visible, g.scalar(0), g.scalar(MASKED_SCORE)]);

  let x = g.op("Gather", [g.initializer("embed_tokens", weights.embedding.data, [c.vocabSize, c.dim]), inputIds]);
  const scoreScale = g.scalar(1 / Math.sqrt(d));
  weights.layers.forEach((layer, i) => {
    const p = `layers.${i}`;
    const h = rmsNorm(g, x, layer.attnNorm, `${p}.input_layernorm`, c.normEps);
    const q = g.op("Reshape", [linearWeight(g, `${p}.q_proj`, layer.wq, h), g.ints([0, 0, c.nHeads, d])]);
    const k = g.op("Reshape", [linearWeight(g, `${p}.k_proj`, layer.wk, h), g.ints([0, 0, c.nKvHeads, d])]);
    const v = g.op("Reshape", [linearWeight(g, `${p}.v_proj`, layer.wv, h), g.ints([0, 0, c.nKvHeads, d])]);
    const qRot = rope(g, q, cos, sin, d);
    const kRot = g.op("Transpose", [rope(g, k, cos, sin, d)], { perm: [0, 2, 1, 3] });
    const presentKey = g.op("Concat", [past[i].key, kRot], { axis: 2 }, { outputs: [`present.${i}.key`] });
    const vT = g.op("Transpose", [v], { perm: [0, 2, 1, 3] });
    const presentValue = g.op("Concat", [past[i].value, vT], { axis: 2 }, { outputs: [`present.${i}.value`] });

    // Query head h uses key/value head floor(h / group): view Q as [b, kv, group, s, d] and broadcast K/V over group.
    const q5 = g.op("Transpose", [g.op("Reshape", [qRot, g.ints([0, 0, c.nKvHeads, group, d])])], {
      perm: [0, 2, 3, 1, 4],
    });
    const keys = g.op("Unsqueeze", [presentKey, g.ints([2])]);
    const values = g.op("Unsqueeze", [presentValue, g.ints([2])]);
    const scores = g.op("MatMul", [
      g.op("Mul", [q5, scoreScale]),
      g.op("Transpose", [keys], { perm: [0, 1, 2, 4, 3] }),
    ]);
    const probs = g.op("Softmax", [g.op("Add", [scores, maskBias])], { axis: -1 });
    const context = g.op("Transpose", [g.op("MatMul", [probs, values])], { perm: [0, 3, 1, 2, 4] });
    const attn = linearWeight(g, `${p}.o_proj`, layer.wo, g.op("Reshape", [context, g.ints([0, 0, c.nHeads * d])]));
    x = g.op("Add", [x, attn]);

    const f = rmsNorm(g, x, layer.ffnNorm, `${p}.post_attention_layernorm`, c.normEps);
    const gate = linearWeight(g, `${p}.gate_proj`, layer.w1, f);
    const up = linearWeight(g, `${p}.up_proj`, layer.w3, f);
    const act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up]);
    x = g.op("Add", [x, linearWeight(g, `${p}.down_proj`, layer.w2, act)]);
  });

  const normed = rmsNorm(g, x, weights.finalNorm, "norm", c.normEps);
  const logitsShape = g.op("Concat", [g.op("Shape", [inputIds]), g.ints([c.vocabSize])], { axis: 0 });
  const cls = weights.classifier;
  const bias = weights.logitsBias && g.initializer("logits_bias", weights.logitsBias, [c.vocabSize]);
  let flatLogits: string;
  let classifier: string | undefined;
  if (cls !== null && isQuantized(cls)) {
    const raw = linearWeight(g, "lm_head", cls, normed);
    flatLogits = bias ? g.op("Add", [raw, bias]) : raw;
  } else {
    // Gemm with transB reads the [vocab, dim] matrix in place, so a tied classifier shares the embedding tensor.
    classifier = cls === null ? "embed_tokens" : g.initializer("lm_head", cls.data, [c.vocabSize, c.dim]);
    const flat = g.op("Reshape", [normed, g.ints([-1, c.dim])]);
    flatLogits = g.op("Gemm", bias ? [flat, classifier, bias] : [flat, classifier], { transB: 1 });
  }
  g.op("Reshape", [flatLogits, logitsShape], {}, { outputs: ["logits"] });

  g.output("logits", DataType.FLOAT, [B, S, c.vocabSize]);
  if (weights.medusa && weights.medusa.length > 0) {
    if (classifier === undefined) throw new Error("Medusa heads need a dense classifier");
    medusaHeads(g, weights.medusa, normed, classifier, bias, c.dim, c.vocabSize);
  }
  past.forEach((_, i) => {
    g.output(`present.${i}.key`, DataType.FLOAT, [B, c.nKvHeads, T, d]);
    g.output(`present.${i}.value`, DataType.FLOAT, [B, c.nKvHeads, T, d]);
  });
  return g;
}

/**
 * The heads as extra outputs: `medusa_logits` [b, s, heads, vocab] at every position (head i's logits for the token
 * i + 2 places on) and `hidden_states` [b, s, dim], the normalised state the heads read (training inputs). The
 * residual blocks run as one MatMul over the heads stacked; heads sharing the classifier run as one Gemm over all
 * their rows, so the classifier's weights are read once however many heads there are.
 */
function medusaHeads(
  g: Graph,
  heads: readonly MedusaHead[],
  normed: string,
  classifier: string,
  bias: string | null,
  dim: number,
  vocabSize: number,
): void {
  const n = heads.length;
  const shared = heads.every((h) => h.projection === null);
  if (!shared && heads.some((h) => h.projection === null)) throw new Error("Medusa heads share the classifier or none");
  g.op("Identity", [normed], {}, { outputs: ["hidden_states"] });
  // [dim, n·dim]: column block i is head i's W transposed.
  const stacked = new Float32Array(dim * n * dim);
  heads.forEach((head, i) => {
    const t = transpose(head.residual);
    for (let r = 0; r < dim; r++) stacked.set(t.data.subarray(r * dim, (r + 1) * dim), r * n * dim + i * dim);
  });
  const biases = new Float32Array(n * dim);
  heads.forEach((head, i) => {
    biases.set(head.bias, i * dim);
  });
  const pre = g.op("Add", [
    g.op("Reshape", [
      g.op("MatMul", [normed, g.initializer("medusa.residual", stacked, [dim, n * dim])]),
      g.ints([0, 0, n, dim]),
    ]),
    g.initializer("medusa.bias", biases, [n, dim]),
  ]);
  const blocks = g.op("Add", [g.op("Unsqueeze", [normed, g.ints([2])]), g.op("Mul", [pre, g.op("Sigmoid", [pre])])]);
  const shape = g.op("Concat", [g.op("Shape", [normed], { start: 0, end: 2 }), g.ints([n, vocabSize])], { axis: 0 });
  let flat: string;
  if (shared) {
    const rows = g.op("Reshape", [blocks, g.ints([-1, dim])]);
    flat = g.op("Gemm", bias ? [rows, classifier, bias] : [rows, classifier], { transB: 1 });
  } else {
    // [n, b·s, dim] × [n, dim, vocab] → [n, b·s, vocab] → [b·s, n, vocab].
    const projections = new Float32Array(n * dim * vocabSize);
    heads.forEach((head, i) => {
      projections.set(transpose(head.projection as Matrix).data, i * dim * vocabSize);
    });
    const perHead = g.op("Transpose", [g.op("Reshape", [blocks, g.ints([-1, n, dim])])], { perm: [1, 0, 2] });
    const raw = g.op("MatMul", [perHead, g.initializer("medusa.projection", projections, [n, dim, vocabSize])]);
    const logits = g.op("Transpose", [raw], { perm: [1, 0, 2] });
    flat = bias ? g.op("Add", [logits, bias]) : logits;
  }
  g.op("Reshape", [flat, shape], {}, { outputs: ["medusa_logits"] });
  g.output("medusa_logits", DataType.FLOAT, [B, S, n, vocabSize]);
  g.output("hidden_states", DataType.FLOAT, [B, S, dim]);
}

/** True when the graph needs ONNX Runtime's com.microsoft operators. */
export function usesMicrosoftOps(weights: LlamaWeights): boolean {
  const linears = weights.layers.flatMap((l) => [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3]);
  if (weights.classifier) linears.push(weights.classifier);
  return linears.some(isQuantized);
}
