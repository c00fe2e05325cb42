/**
 * Symmetric group quantization of weight matrices (the draft variants): each row is cut into groups of `groupSize`
 * values along the input dim, each group stores one float scale and `bits`-bit codes, value = (code - 2^(bits-1))·scale
 * (the default zero point of ONNX Runtime's MatMulNBits).
 */
import {
  isQuantized,
  type Linear,
  type LlamaLayer,
  type LlamaWeights,
  type Matrix,
  type QuantizedMatrix,
} from "./llama-weights.ts";

export type QuantBits = 4 | 8;

/** Quantizes a [rows, cols] matrix in groups along each row (the last group is zero-padded). */
export function quantizeMatrix(m: Matrix, bits: QuantBits, groupSize: number): QuantizedMatrix {
  if (groupSize < 16 || (groupSize & (groupSize - 1)) !== 0)
    throw new Error(`group size ${groupSize}: power of 2, ≥ 16`);
  const groups = Math.ceil(m.cols / groupSize);
  const zero = 1 << (bits - 1);
  const maxCode = (1 << bits) - 1;
  const blobBytes = (groupSize * bits) / 8;
  const packed = new Uint8Array(m.rows * groups * blobBytes);
  const scales = new Float32Array(m.rows * groups);
  for (let r = 0; r < m.rows; r++) {
    for (let g = 0; g < groups; g++) {
      const start = r * m.cols + g * groupSize;
      const end = r * m.cols + Math.min(m.cols, (g + 1) * groupSize);
      let absMax = 0;
      for (let i = start; i < end; i++) absMax = Math.max(absMax, Math.abs(m.data[i]));
      // Math.fround: the code is chosen against the scale the runtime will really use.
      const scale = Math.fround(absMax / (zero - 1));
      scales[r * groups + g] = scale;
      const blob = (r * groups + g) * blobBytes;
      for (let i = start; i < end; i++) {
        const code = scale === 0 ? zero : Math.min(maxCode, Math.max(0, Math.round(m.data[i] / scale) + zero));
        const k = i - start;
        if (bits === 8) packed[blob + k] = code;
        else packed[blob + (k >> 1)] |= k & 1 ? code << 4 : code;
      }
      // Padding codes of the last group must decode to 0.
      for (let k = end - start; k < groupSize; k++) {
        if (bits === 8) packed[blob + k] = zero;
        else packed[blob + (k >> 1)] |= k & 1 ? zero << 4 : zero;
      }
    }
  }
  return { rows: m.rows, cols: m.cols, bits, groupSize, packed, scales };
}

/** The float matrix a quantized matrix stands for. */
export function dequantizeMatrix(q: QuantizedMatrix): Matrix {
  const groups = Math.ceil(q.cols / q.groupSize);
  const zero = 1 << (q.bits - 1);
  const blobBytes = (q.groupSize * q.bits) / 8;
  const data = new Float32Array(q.rows * q.cols);
  for (let r = 0; r < q.rows; r++) {
    for (let c = 0; c < q.cols; c++) {
      const g = Math.floor(c / q.groupSize);
      const k = c % q.groupSize;
      const blob = (r * groups + g) * blobBytes;
      const code = q.bits === 8 ? q.packed[blob + k] : (q.packed[blob + (k >> 1)] >> (k & 1 ? 4 : 0)) & 15;
      data[r * q.cols + c] = (code - zero) * q.scales[r * groups + g];
    }
  }
  return { rows: q.rows, cols: q.cols, data };
}

export interface QuantizeOptions {
  readonly bits: QuantBits;
  readonly groupSize: number;
  /**
   * "matmul-nbits": linear layers stay packed and run as com.microsoft.MatMulNBits; "dequantized": the quantized
   * values are stored as float32 and run as plain MatMul (same function, standard ops only).
   */
  readonly format: "matmul-nbits" | "dequantized";
}

/**
 * Quantizes every weight matrix, the token embedding included. The embedding table itself stays float (Gather needs
 * it) with the dequantized values; a tied classifier becomes a separate packed matrix in the matmul-nbits format.
 */
export function quantizeWeights(weights: LlamaWeights, options: QuantizeOptions): LlamaWeights {
  const packedOrFloat = (m: Matrix): Linear => {
    const q = quantizeMatrix(m, options.bits, options.groupSize);
    return options.format === "matmul-nbits" ? q : dequantizeMatrix(q);
  };
  const dense = (l: Linear): Matrix => {
    if (isQuantized(l)) throw new Error("weights are already quantized");
    return l;
  };
  const layers = weights.layers.map(
    (l): LlamaLayer => ({
      ...l,
      wq: packedOrFloat(dense(l.wq)),
      wk: packedOrFloat(dense(l.wk)),
      wv: packedOrFloat(dense(l.wv)),
      wo: packedOrFloat(dense(l.wo)),
      w1: packedOrFloat(dense(l.w1)),
      w2: packedOrFloat(dense(l.w2)),
      w3: packedOrFloat(dense(l.w3)),
    }),
  );
  const embeddingCodes = quantizeMatrix(weights.embedding, options.bits, options.groupSize);
  let classifier: Linear | null;
  if (weights.classifier !== null) classifier = packedOrFloat(dense(weights.classifier));
  else classifier = options.format === "matmul-nbits" ? embeddingCodes : null;
  return { ...weights, embedding: dequantizeMatrix(embeddingCodes), layers, classifier };
}
