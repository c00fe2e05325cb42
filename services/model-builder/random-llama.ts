/** Tiny Llama models with seeded random weights, written on the fly for unit tests (no tokenizer). */
import type { LlamaLayer, LlamaWeights, Matrix } from "./llama-weights.ts";
import { type WrittenModel, writeModelDir } from "./model-dir.ts";

export interface RandomLlamaOptions {
  readonly vocab?: number;
  readonly dim?: number;
  readonly layers?: number;
  readonly heads?: number;
  readonly kvHeads?: number;
  /** Feed-forward width (default 2·dim + 8, deliberately not a multiple of 32). */
  readonly hiddenDim?: number;
  readonly maxSeqLen?: number;
  /** Separate classifier instead of the embedding (default false). */
  readonly separateClassifier?: boolean;
  readonly seed?: number;
}

/** mulberry32: a small seeded generator, plenty for test weights and reproducible benchmark texts. */
export function uniform(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomLlamaWeights(options: RandomLlamaOptions = {}): LlamaWeights {
  const vocab = options.vocab ?? 64;
  const dim = options.dim ?? 32;
  const nLayers = options.layers ?? 2;
  const nHeads = options.heads ?? 4;
  const nKvHeads = options.kvHeads ?? 2;
  const hiddenDim = options.hiddenDim ?? 2 * dim + 8;
  const headDim = dim / nHeads;
  const next = uniform(options.seed ?? 1);
  // Uniform in ±sqrt(3/fan_in): unit-variance outputs, so logits are far from ties and from overflow.
  const matrix = (rows: number, cols: number, scale = Math.sqrt(3 / cols)): Matrix => ({
    rows,
    cols,
    data: Float32Array.from({ length: rows * cols }, () => (2 * next() - 1) * scale),
  });
  const norm = () => Float32Array.from({ length: dim }, () => 0.5 + next());
  const layers = Array.from(
    { length: nLayers },
    (): LlamaLayer => ({
      attnNorm: norm(),
      wq: matrix(nHeads * headDim, dim),
      wk: matrix(nKvHeads * headDim, dim),
      wv: matrix(nKvHeads * headDim, dim),
      wo: matrix(dim, nHeads * headDim),
      ffnNorm: norm(),
      w1: matrix(hiddenDim, dim),
      w2: matrix(dim, hiddenDim),
      w3: matrix(hiddenDim, dim),
    }),
  );
  return {
    config: {
      dim,
      hiddenDim,
      nLayers,
      nHeads,
      nKvHeads,
      headDim,
      vocabSize: vocab,
      realVocabSize: vocab,
      maxSeqLen: options.maxSeqLen ?? 256,
      normEps: 1e-5,
      ropeTheta: 10000,
    },
    embedding: matrix(vocab, dim, 1),
    layers,
    finalNorm: norm(),
    classifier: options.separateClassifier ? matrix(vocab, dim) : null,
    logitsBias: null,
  };
}

/** Writes a complete random-weight model directory (config.json, onnx/model.onnx) into `dir`. */
export async function buildRandomLlama(dir: string, options: RandomLlamaOptions = {}): Promise<WrittenModel> {
  return writeModelDir(dir, randomLlamaWeights(options), {
    variant: "random",
    source: "random",
    realVocabSize: options.vocab ?? 64,
    details: { seed: options.seed ?? 1 },
  });
}
