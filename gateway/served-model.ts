/** The target model as the gateway needs it: tokenizer, context length and special ids, without an ONNX session. */
import { kvBytesPerToken } from "../services/runtime/decoder-layout.ts";
import { type HfConfig, resolveModel } from "../services/runtime/model-files.ts";
import { loadTokenizer } from "../services/runtime/tokenizer/load.ts";
import type { Tokenizer } from "../services/runtime/tokenizer/tokenizer.ts";
import type { TargetModel } from "./generation.ts";

export interface ServedModel extends TargetModel {
  /** Ids a prompt may hold: the tokenizer's (padded targets mask the ids beyond it off). */
  readonly vocabSize: number;
  readonly bosTokenId: number | undefined;
  /** Target KV cache bytes one token of a sequence occupies on a replica (from config.json's shape). */
  readonly kvBytesPerToken: number;
}

function firstId(value: number | number[] | null | undefined): number | undefined {
  return Array.isArray(value) ? value[0] : (value ?? undefined);
}

/** The KV bytes per token a replica's runtime will report for this model, from config.json alone (no session). */
export function kvBytesPerTokenOf(config: HfConfig): number {
  const layers = config.num_hidden_layers ?? config.n_layer;
  const heads = config.num_attention_heads ?? config.n_head;
  const hidden = config.hidden_size ?? config.n_embd;
  const kvHeads = config.num_key_value_heads ?? heads;
  const headDim = config.head_dim ?? (hidden !== undefined && heads !== undefined ? hidden / heads : undefined);
  if (layers === undefined || kvHeads === undefined || headDim === undefined) {
    throw new Error("config.json gives no layer count, KV heads or head size: the gateway cannot size KV memory");
  }
  return kvBytesPerToken(layers, kvHeads, headDim);
}

export async function loadServedModel(name: string): Promise<{ model: ServedModel; tokenizer: Tokenizer }> {
  const files = resolveModel(name);
  const tokenizer = await loadTokenizer(files.dir);
  const contextLength = files.config.max_position_embeddings ?? files.config.n_positions;
  if (contextLength === undefined) throw new Error(`${files.dir}/config.json gives no context length`);
  return {
    model: {
      name: files.name,
      contextLength,
      vocabSize: tokenizer.vocabSize,
      bosTokenId: firstId(files.config.bos_token_id) ?? tokenizer.bosId,
      eosTokenId: firstId(files.config.eos_token_id) ?? tokenizer.eosId,
      kvBytesPerToken: kvBytesPerTokenOf(files.config),
    },
    tokenizer,
  };
}
