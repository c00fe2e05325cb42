/** Size and compute figures of a Llama model, counted the way model cards count them. */
import type { LlamaConfig } from "./llama-weights.ts";

export interface ModelCost {
  /** Weights: embedding, layers, final norm, and the classifier unless tied to the embedding. */
  readonly parameters: number;
  /** Floating-point operations (2 per multiply-add) of the weight matmuls for one token, classifier included. */
  readonly flopsPerToken: number;
  /** Extra attention FLOPs per token for each cached position it attends to (QK^T and PV). */
  readonly attentionFlopsPerContextToken: number;
}

export function modelCost(c: LlamaConfig, tiedEmbeddings: boolean): ModelCost {
  const q = c.nHeads * c.headDim;
  const kv = c.nKvHeads * c.headDim;
  const layerMacs = c.dim * q + 2 * c.dim * kv + q * c.dim + 3 * c.dim * c.hiddenDim;
  const embedding = c.vocabSize * c.dim;
  return {
    parameters: embedding + c.nLayers * (layerMacs + 2 * c.dim) + c.dim + (tiedEmbeddings ? 0 : embedding),
    flopsPerToken: 2 * (c.nLayers * layerMacs + embedding),
    attentionFlopsPerContextToken: 2 * 2 * c.nLayers * q,
  };
}
