/**
 * `config.json` of a model directory: the Hugging Face fields (so other ONNX Runtime users such as transformers.js can
 * load our models) plus a `specgate` object saying where the model came from and which ids are real.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { LlamaConfig } from "./llama-weights.ts";

/** Provenance of a built model. */
export interface SpecgateInfo {
  /** How the model was made, e.g. "exact", "cost-scaled", "int4-g32", "early-exit-4". */
  readonly variant: string;
  /** Source checkpoint file name, or "random". */
  readonly source: string;
  readonly sourceSha256?: string;
  /** Ids below this are real tokens; higher ids are padding, masked off in the logits. */
  readonly realVocabSize: number;
  /** Free-form details: shapes of the original model, quantization parameters, cost figures. */
  readonly details?: Record<string, unknown>;
}

export interface HfLlamaConfig {
  readonly architectures: readonly string[];
  readonly model_type: "llama";
  readonly hidden_size: number;
  readonly intermediate_size: number;
  readonly num_hidden_layers: number;
  readonly num_attention_heads: number;
  readonly num_key_value_heads: number;
  readonly head_dim: number;
  readonly vocab_size: number;
  readonly max_position_embeddings: number;
  readonly rms_norm_eps: number;
  readonly rope_theta: number;
  readonly hidden_act: "silu";
  readonly bos_token_id: number;
  readonly eos_token_id: number;
  readonly tie_word_embeddings: boolean;
  readonly torch_dtype: "float32";
  readonly use_cache: true;
  readonly "transformers.js_config"?: { readonly use_external_data_format?: boolean };
  readonly specgate: SpecgateInfo;
}

export const BOS_TOKEN_ID = 1;
export const EOS_TOKEN_ID = 2;

export function toHfConfig(
  c: LlamaConfig,
  tiedEmbeddings: boolean,
  specgate: SpecgateInfo,
  externalData: boolean,
): HfLlamaConfig {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: c.headDim,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.maxSeqLen,
    rms_norm_eps: c.normEps,
    rope_theta: c.ropeTheta,
    hidden_act: "silu",
    bos_token_id: BOS_TOKEN_ID,
    eos_token_id: EOS_TOKEN_ID,
    tie_word_embeddings: tiedEmbeddings,
    torch_dtype: "float32",
    use_cache: true,
    ...(externalData ? { "transformers.js_config": { use_external_data_format: true } } : {}),
    specgate,
  };
}

/** What a runtime needs to know about a decoder model directory (any Hugging Face decoder config). */
export interface ModelConfig {
  readonly modelType: string;
  readonly numLayers: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  /** Width of the logits rows. */
  readonly vocabSize: number;
  /** Ids below this are real tokens (equals vocabSize unless the model was padded). */
  readonly realVocabSize: number;
  readonly maxPositionEmbeddings: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly specgate: SpecgateInfo | null;
}

function firstId(v: unknown, fallback: number): number {
  if (Array.isArray(v)) return typeof v[0] === "number" ? v[0] : fallback;
  return typeof v === "number" ? v : fallback;
}

/** Reads `<dir>/config.json`, with the usual Hugging Face defaults for fields a model may omit. */
export async function readModelConfig(dir: string): Promise<ModelConfig> {
  const raw = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  const num = (key: string): number => {
    const v = raw[key];
    if (typeof v !== "number") throw new Error(`${dir}/config.json: missing number ${key}`);
    return v;
  };
  const heads = num("num_attention_heads");
  const vocabSize = num("vocab_size");
  const specgate = (raw.specgate as SpecgateInfo | undefined) ?? null;
  return {
    modelType: String(raw.model_type),
    numLayers: num("num_hidden_layers"),
    numKvHeads: typeof raw.num_key_value_heads === "number" ? raw.num_key_value_heads : heads,
    headDim: typeof raw.head_dim === "number" ? raw.head_dim : num("hidden_size") / heads,
    vocabSize,
    realVocabSize: specgate?.realVocabSize ?? vocabSize,
    maxPositionEmbeddings: num("max_position_embeddings"),
    bosTokenId: firstId(raw.bos_token_id, BOS_TOKEN_ID),
    eosTokenId: firstId(raw.eos_token_id, EOS_TOKEN_ID),
    specgate,
  };
}
