/** The target model as the gateway needs it: tokenizer, context length and special ids, without an ONNX session. */
import { resolveModel } from "../services/runtime/model-files.ts";
import { loadTokenizer } from "../services/runtime/tokenizer/load.ts";
import type { Tokenizer } from "../services/runtime/tokenizer/tokenizer.ts";
import type { TargetModel } from "./generation.ts";

export interface ServedModel extends TargetModel {
  /** Ids a prompt may hold: the tokenizer's (padded targets mask the ids beyond it off). */
  readonly vocabSize: number;
  readonly bosTokenId: number | undefined;
}

function firstId(value: number | number[] | null | undefined): number | undefined {
  return Array.isArray(value) ? value[0] : (value ?? undefined);
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
    },
    tokenizer,
  };
}
