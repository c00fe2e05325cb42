/**
 * `config.json` of a model directory: the Hugging Face fields (so other ONNX Runtime users such as transformers.js can
 * load our models) plus a `specgate` object saying where the model came from and which ids are real.
 */
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
