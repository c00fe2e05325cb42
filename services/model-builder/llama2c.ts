/**
 * Reader for llama2.c checkpoints, driven by their headers: the legacy format (7 int32, negative vocab_size meaning a
 * separate classifier, freq_cis tables after the final norm) and the "version 1" export (magic "ak42", 256-byte
 * header with a shared_classifier flag, weights grouped by kind). Any size, grouped-query attention.
 */
import { readFile } from "node:fs/promises";
import type { LlamaConfig, LlamaLayer, LlamaWeights, Matrix } from "./llama-weights.ts";

export type Llama2cFormat = "legacy" | "v1";

export interface Llama2cCheckpoint {
  readonly format: Llama2cFormat;
  readonly weights: LlamaWeights;
}

const V1_MAGIC = 0x616b3432;
const V1_HEADER_BYTES = 256;
// llama2.c hard-codes these.
const NORM_EPS = 1e-5;
const ROPE_THETA = 10000;

interface Header {
  readonly format: Llama2cFormat;
  readonly dim: number;
  readonly hiddenDim: number;
  readonly nLayers: number;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly vocabSize: number;
  readonly maxSeqLen: number;
  readonly sharedClassifier: boolean;
  readonly headerBytes: number;
}

function readHeader(view: DataView): Header {
  if (view.byteLength < 28) throw new Error("llama2.c checkpoint: file shorter than its header");
  const v1 = view.byteLength >= V1_HEADER_BYTES && view.getUint32(0, true) === V1_MAGIC;
  if (v1) {
    const version = view.getInt32(4, true);
    if (version !== 1) throw new Error(`llama2.c checkpoint: export version ${version} is not supported (only 1)`);
  }
  const base = v1 ? 8 : 0;
  const int = (i: number) => view.getInt32(base + 4 * i, true);
  const vocab = int(5);
  const header: Header = {
    format: v1 ? "v1" : "legacy",
    dim: int(0),
    hiddenDim: int(1),
    nLayers: int(2),
    nHeads: int(3),
    nKvHeads: int(4),
    vocabSize: Math.abs(vocab),
    maxSeqLen: int(6),
    sharedClassifier: v1 ? view.getUint8(36) === 1 : vocab > 0,
    headerBytes: v1 ? V1_HEADER_BYTES : 28,
  };
  const { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, maxSeqLen } = header;
  const sane =
    [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, maxSeqLen].every((n) => n > 0 && n < 1 << 24) &&
    dim % nHeads === 0 &&
    nHeads % nKvHeads === 0 &&
    (dim / nHeads) % 2 === 0;
  if (!sane) throw new Error(`llama2.c checkpoint: implausible header ${JSON.stringify(header)}`);
  return header;
}

/**
 * Reorders q/k rows of every head from llama2.c's adjacent rotary pairs (2j, 2j+1) to Hugging Face's halves
 * (j, j + headDim/2), which rotate with the same frequency; attention scores are unchanged since q and k move alike.
 */
function toRotateHalf(m: Matrix, headDim: number): Matrix {
  const out = new Float32Array(m.data.length);
  const half = headDim / 2;
  for (let row = 0; row < m.rows; row++) {
    const head = Math.floor(row / headDim);
    const i = row % headDim;
    const target = head * headDim + (i % 2 === 0 ? i / 2 : half + (i - 1) / 2);
    out.set(m.data.subarray(row * m.cols, (row + 1) * m.cols), target * m.cols);
  }
  return { rows: m.rows, cols: m.cols, data: out };
}

/** Parses a llama2.c checkpoint held in memory. */
export function parseLlama2c(bytes: Uint8Array): Llama2cCheckpoint {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = readHeader(view);
  const headDim = h.dim / h.nHeads;
  const qDim = h.nHeads * headDim;
  const kvDim = h.nKvHeads * headDim;
  const L = h.nLayers;

  // Sections in file order; sizes in floats.
  const sizes = {
    embedding: h.vocabSize * h.dim,
    attnNorm: L * h.dim,
    ffnNorm: L * h.dim,
    finalNorm: h.dim,
    wq: L * qDim * h.dim,
    wk: L * kvDim * h.dim,
    wv: L * kvDim * h.dim,
    wo: L * h.dim * qDim,
    w1: L * h.hiddenDim * h.dim,
    w2: L * h.dim * h.hiddenDim,
    w3: L * h.hiddenDim * h.dim,
    // freq_cis_real and freq_cis_imag of the legacy format: recomputed in the graph, skipped here.
    freqCis: h.maxSeqLen * headDim,
    classifier: h.sharedClassifier ? 0 : h.vocabSize * h.dim,
  };
  type Section = keyof typeof sizes;
  const order: Section[] =
    h.format === "legacy"
      ? ["embedding", "attnNorm", "wq", "wk", "wv", "wo", "ffnNorm", "w1", "w2", "w3", "finalNorm", "freqCis"]
      : ["attnNorm", "ffnNorm", "finalNorm", "embedding", "wq", "wk", "wv", "wo", "w1", "w2", "w3"];
  order.push("classifier");
  const expected = h.headerBytes + 4 * order.reduce((sum, s) => sum + sizes[s], 0);
  if (expected !== bytes.byteLength) {
    throw new Error(`llama2.c ${h.format} checkpoint: header implies ${expected} bytes, file has ${bytes.byteLength}`);
  }
  const part = {} as Record<Section, Float32Array>;
  let offset = h.headerBytes;
  for (const s of order) {
    const end = offset + sizes[s] * 4;
    // Copy: the file buffer need not be 4-byte aligned, and the weights outlive it.
    part[s] = new Float32Array(Uint8Array.prototype.slice.call(bytes, offset, end).buffer);
    offset = end;
  }
  const slice = (s: Section, l: number, rows: number, cols: number): Matrix => ({
    rows,
    cols,
    data: part[s].subarray(l * rows * cols, (l + 1) * rows * cols),
  });
  const vector = (s: Section, l: number) => part[s].subarray(l * h.dim, (l + 1) * h.dim);

  const config: LlamaConfig = {
    dim: h.dim,
    hiddenDim: h.hiddenDim,
    nLayers: L,
    nHeads: h.nHeads,
    nKvHeads: h.nKvHeads,
    headDim,
    vocabSize: h.vocabSize,
    realVocabSize: h.vocabSize,
    maxSeqLen: h.maxSeqLen,
    normEps: NORM_EPS,
    ropeTheta: ROPE_THETA,
  };
  const layers = Array.from(
    { length: L },
    (_, l): LlamaLayer => ({
      attnNorm: vector("attnNorm", l),
      wq: toRotateHalf(slice("wq", l, qDim, h.dim), headDim),
      wk: toRotateHalf(slice("wk", l, kvDim, h.dim), headDim),
      wv: slice("wv", l, kvDim, h.dim),
      wo: slice("wo", l, h.dim, qDim),
      ffnNorm: vector("ffnNorm", l),
      w1: slice("w1", l, h.hiddenDim, h.dim),
      w2: slice("w2", l, h.dim, h.hiddenDim),
      w3: slice("w3", l, h.hiddenDim, h.dim),
    }),
  );
  const embedding = slice("embedding", 0, h.vocabSize, h.dim);
  const classifier = h.sharedClassifier ? null : slice("classifier", 0, h.vocabSize, h.dim);
  return {
    format: h.format,
    weights: { config, embedding, layers, finalNorm: part.finalNorm, classifier, logitsBias: null },
  };
}

/** Reads and parses a llama2.c checkpoint file. */
export async function readLlama2c(path: string): Promise<Llama2cCheckpoint> {
  return parseLlama2c(await readFile(path));
}
