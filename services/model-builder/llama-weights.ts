/**
 * Llama-architecture weights in memory, in the Hugging Face convention: linear weights are [out, in] row-major, and
 * RoPE rotates the two halves of each head (rotate_half), so q/k rows of llama2.c checkpoints (which rotate adjacent
 * pairs) are permuted on load.
 */

export interface LlamaConfig {
  /** Residual stream width. */
  readonly dim: number;
  /** Feed-forward (SwiGLU) width. */
  readonly hiddenDim: number;
  readonly nLayers: number;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  /** Width of the logits rows (may exceed `realVocabSize` when padded ids are masked off by `logitsBias`). */
  readonly vocabSize: number;
  /** Number of ids the tokenizer really uses. */
  readonly realVocabSize: number;
  readonly maxSeqLen: number;
  readonly normEps: number;
  readonly ropeTheta: number;
}

/** A dense matrix, row-major. */
export interface Matrix {
  readonly rows: number;
  readonly cols: number;
  readonly data: Float32Array;
}

/**
 * A matrix quantized in groups along each row, laid out as ONNX Runtime's MatMulNBits expects: `packed` is
 * [rows, groups, groupSize·bits/8] bytes (4-bit codes low nibble first), `scales` is [rows * groups], `zeroPoints`
 * holds one code per group (rows padded to whole bytes), and a value is (code - zeroPoint) * scale.
 */
export interface QuantizedMatrix {
  readonly rows: number;
  readonly cols: number;
  readonly bits: 4 | 8;
  readonly groupSize: number;
  readonly packed: Uint8Array;
  readonly scales: Float32Array;
  readonly zeroPoints: Uint8Array;
}

/** Weight of a linear layer, [out, in]. */
export type Linear = Matrix | QuantizedMatrix;

export function isQuantized(linear: Linear): linear is QuantizedMatrix {
  return "packed" in linear;
}

export interface LlamaLayer {
  readonly attnNorm: Float32Array;
  readonly wq: Linear;
  readonly wk: Linear;
  readonly wv: Linear;
  readonly wo: Linear;
  readonly ffnNorm: Float32Array;
  /** Gate projection (SiLU branch). */
  readonly w1: Linear;
  /** Down projection. */
  readonly w2: Linear;
  /** Up projection. */
  readonly w3: Linear;
}

export interface LlamaWeights {
  readonly config: LlamaConfig;
  /** [vocabSize, dim]. */
  readonly embedding: Matrix;
  readonly layers: readonly LlamaLayer[];
  readonly finalNorm: Float32Array;
  /** [vocabSize, dim], or null when the classifier is the embedding matrix. */
  readonly classifier: Linear | null;
  /** Added to the logits (masks padded vocabulary ids off), or null. */
  readonly logitsBias: Float32Array | null;
  /** Medusa heads read the final normalised hidden states; absent for a plain decoder. */
  readonly medusa?: readonly MedusaHead[];
}

/**
 * One Medusa head (Cai et al. 2024): a residual block y = x + SiLU(W·x + b) on the final normalised hidden state x,
 * then a vocabulary projection. Head i predicts the token i + 2 places after its position (the classifier predicts
 * the next one).
 */
export interface MedusaHead {
  /** W, [dim, dim] ([out, in]); zero-initialised, so an untrained head is the classifier itself. */
  readonly residual: Matrix;
  readonly bias: Float32Array;
  /** The head's own [vocabSize, dim] projection, or null to share the model's classifier (TGI's second generation). */
  readonly projection: Matrix | null;
}

/** The model made of the first `layers` layers, the final norm and the classifier (an early-exit draft). */
export function earlyExit(weights: LlamaWeights, layers: number): LlamaWeights {
  if (layers < 1 || layers > weights.config.nLayers) throw new Error(`early exit after ${layers} layers`);
  return { ...weights, config: { ...weights.config, nLayers: layers }, layers: weights.layers.slice(0, layers) };
}

/** Row-major transpose of a [rows, cols] matrix. */
export function transpose(m: Matrix): Matrix {
  const { rows, cols, data } = m;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[base + c];
  }
  return { rows: cols, cols: rows, data: out };
}
