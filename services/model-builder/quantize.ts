/**
 * Asymmetric group quantization of weight matrices (the draft variants), as ONNX Runtime's MatMulNBits quantizer does
 * it: each row is cut into groups of `groupSize` values along the input dim; a group spans [min(0, lo), max(0, hi)]
 * with 2^bits levels, stores a float scale and an integer zero point, and value = (code - zeroPoint)·scale.
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

/** Stores `code` as element `k` of a byte array of `bits`-bit codes (4-bit codes low nibble first). */
function put(bytes: Uint8Array, base: number, k: number, code: number, bits: QuantBits): void {
  if (bits === 8) bytes[base + k] = code;
  else bytes[base + (k >> 1)] |= k & 1 ? code << 4 : code;
}

function get(bytes: Uint8Array, base: number, k: number, bits: QuantBits): number {
  return bits === 8 ? bytes[base + k] : (bytes[base + (k >> 1)] >> (k & 1 ? 4 : 0)) & 15;
}

/** Bytes of one row of zero points: one code per group, rows padded to whole bytes. */
export function zeroPointRowBytes(groups: number, bits: QuantBits): number {
  return Math.ceil((groups * bits) / 8);
}

/** Quantizes a [rows, cols] matrix in groups along each row (the last group is padded with codes of 0). */
export function quantizeMatrix(m: Matrix, bits: QuantBits, groupSize: number): QuantizedMatrix {
  if (groupSize < 16 || (groupSize & (groupSize - 1)) !== 0)
    throw new Error(`group size ${groupSize}: power of 2, ≥ 16`);
  const groups = Math.ceil(m.cols / groupSize);
  const maxCode = (1 << bits) - 1;
  const blobBytes = (groupSize * bits) / 8;
  const zpRow = zeroPointRowBytes(groups, bits);
  const packed = new Uint8Array(m.rows * groups * blobBytes);
  const scales = new Float32Array(m.rows * groups);
  const zeroPoints = new Uint8Array(m.rows * zpRow);
  for (let r = 0; r < m.rows; r++) {
    for (let g = 0; g < groups; g++) {
      const start = r * m.cols + g * groupSize;
      const end = r * m.cols + Math.min(m.cols, (g + 1) * groupSize);
      let lo = 0;
      let hi = 0;
      for (let i = start; i < end; i++) {
        lo = Math.min(lo, m.data[i]);
        hi = Math.max(hi, m.data[i]);
      }
      // Math.fround: codes are chosen against the scale the runtime will really use.
      const scale = Math.fround((hi - lo) / maxCode);
      const zero = scale === 0 ? 0 : Math.min(maxCode, Math.max(0, Math.round(-lo / scale)));
      scales[r * groups + g] = scale;
      put(zeroPoints, r * zpRow, g, zero, bits);
      const blob = (r * groups + g) * blobBytes;
      for (let i = start; i < end; i++) {
        const code = scale === 0 ? zero : Math.min(maxCode, Math.max(0, Math.round(m.data[i] / scale) + zero));
        put(packed, blob, i - start, code, bits);
      }
      for (let k = end - start; k < groupSize; k++) put(packed, blob, k, zero, bits);
    }
  }
  return { rows: m.rows, cols: m.cols, bits, groupSize, packed, scales, zeroPoints };
}

/** The float matrix a quantized matrix stands for. */
export function dequantizeMatrix(q: QuantizedMatrix): Matrix {
  const groups = Math.ceil(q.cols / q.groupSize);
  const blobBytes = (q.groupSize * q.bits) / 8;
  const zpRow = zeroPointRowBytes(groups, q.bits);
  const data = new Float32Array(q.rows * q.cols);
  for (let r = 0; r < q.rows; r++) {
    for (let c = 0; c < q.cols; c++) {
      const g = Math.floor(c / q.groupSize);
      const code = get(q.packed, (r * groups + g) * blobBytes, c % q.groupSize, q.bits);
      const zero = get(q.zeroPoints, r * zpRow, g, q.bits);
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
 * Quantizes the linear layers of every block. The token embedding and the classifier stay float32, as weight-only
 * quantizers usually leave them (the classifier is often the embedding itself).
 */
export function quantizeWeights(weights: LlamaWeights, options: QuantizeOptions): LlamaWeights {
  const quantize = (l: Linear): Linear => {
    if (isQuantized(l)) throw new Error("weights are already quantized");
    const q = quantizeMatrix(l, options.bits, options.groupSize);
    return options.format === "matmul-nbits" ? q : dequantizeMatrix(q);
  };
  const layers = weights.layers.map(
    (l): LlamaLayer => ({
      ...l,
      wq: quantize(l.wq),
      wk: quantize(l.wk),
      wv: quantize(l.wv),
      wo: quantize(l.wo),
      w1: quantize(l.w1),
      w2: quantize(l.w2),
      w3: quantize(l.w3),
    }),
  );
  return { ...weights, layers };
}
