/**
 * The shape of a decoder graph as the runtime drives it: which inputs it takes, the names of its cache inputs and
 * outputs per layer, and the KV dimensions. Read from the session's metadata, with config.json filling in what the
 * graph leaves symbolic, and checked against each other.
 */
import type { InferenceSession } from "onnxruntime-node";
import type { HfConfig } from "./model-files.ts";
import { UnsupportedModelError } from "./runtime-errors.ts";

export interface DecoderLayout {
  readonly numLayers: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  /** Cache inputs in feeding order: layer 0 key, layer 0 value, layer 1 key, … */
  readonly pastNames: readonly string[];
  /** The outputs matching `pastNames` one to one. */
  readonly presentNames: readonly string[];
  readonly hasPositionIds: boolean;
  /**
   * Whether attention_mask may carry a tree block after its past+new columns (the project's own graphs, see
   * TREE_MASK_WIDTH). A tree needs it and position_ids; other exports score chains only.
   */
  readonly hasTreeMask: boolean;
  /** Optimum's merged decoders pick their with-cache branch through this boolean input. */
  readonly hasUseCacheBranch: boolean;
  /** Bytes of KV cache one token occupies (all layers, keys and values, float32). */
  readonly kvBytesPerToken: number;
  /** Medusa heads the graph outputs (`medusa_logits` and `hidden_states`), 0 for a plain decoder. */
  readonly medusaHeads: number;
  /** Width of `hidden_states` (0 without heads). */
  readonly hiddenSize: number;
}

type ValueMetadata = InferenceSession.ValueMetadata;

/**
 * The name the project's graphs give attention_mask's width: past + new columns, then optionally a new×new block of
 * which new positions each new position may see (token trees). Optimum exports name it otherwise and read no block.
 */
export const TREE_MASK_WIDTH = "past_sequence_length + sequence_length (+ sequence_length^2 tree mask)";

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;
const PRESENT = /^present\.(\d+)\.(key|value)$/;
const FLOAT32_BYTES = 4;

export function decoderLayout(
  inputs: readonly ValueMetadata[],
  outputs: readonly ValueMetadata[],
  config: HfConfig,
): DecoderLayout {
  const inputNames = new Set(inputs.map((input) => input.name));
  for (const required of ["input_ids", "attention_mask"]) {
    if (!inputNames.has(required)) {
      throw new UnsupportedModelError(`the graph has no "${required}" input`);
    }
  }
  const pasts = inputs.filter((input) => PAST.test(input.name));
  const numLayers = pasts.length / 2;
  if (numLayers < 1 || !Number.isInteger(numLayers)) {
    throw new UnsupportedModelError(
      `expected cache inputs named past_key_values.{i}.key|value, found: ${[...inputNames].join(", ")}`,
    );
  }
  const pastNames: string[] = [];
  const presentNames: string[] = [];
  const outputNames = new Set(outputs.map((output) => output.name));
  for (let layer = 0; layer < numLayers; layer++) {
    for (const kind of ["key", "value"]) {
      const past = `past_key_values.${layer}.${kind}`;
      const present = `present.${layer}.${kind}`;
      if (!inputNames.has(past) || !outputNames.has(present)) {
        throw new UnsupportedModelError(`the graph lacks "${past}" or "${present}"`);
      }
      pastNames.push(past);
      presentNames.push(present);
    }
  }
  const unmatched = outputs.filter((output) => PRESENT.test(output.name) && !presentNames.includes(output.name));
  if (unmatched.length > 0 || !outputNames.has("logits")) {
    throw new UnsupportedModelError(`unexpected outputs: ${outputs.map((output) => output.name).join(", ")}`);
  }

  const firstPast = tensorMetadata(pasts[0]);
  for (const past of pasts) {
    const type = tensorMetadata(past).type;
    if (type !== "float32") {
      throw new UnsupportedModelError(
        `cache input ${past.name} is ${type}; only float32 caches are supported (export the model with fp32 caches)`,
      );
    }
  }
  const heads = config.num_attention_heads ?? config.n_head;
  const hidden = config.hidden_size ?? config.n_embd;
  const numKvHeads = dimension("num_key_value_heads", firstPast.shape[1], config.num_key_value_heads ?? heads);
  const headDim = dimension(
    "head_dim",
    firstPast.shape[3],
    config.head_dim ?? (hidden !== undefined && heads !== undefined ? hidden / heads : undefined),
  );
  const vocabSize = dimension(
    "vocab_size",
    tensorMetadata(outputs.find((o) => o.name === "logits")).shape[2],
    config.vocab_size,
  );
  const contextLength = config.max_position_embeddings ?? config.n_positions;
  if (contextLength === undefined) {
    throw new UnsupportedModelError("config.json gives no max_position_embeddings (or n_positions)");
  }
  const layersInConfig = config.num_hidden_layers ?? config.n_layer;
  if (layersInConfig !== undefined && layersInConfig !== numLayers) {
    throw new UnsupportedModelError(`config.json says ${layersInConfig} layers, the graph has ${numLayers}`);
  }
  return {
    numLayers,
    numKvHeads,
    headDim,
    vocabSize,
    contextLength,
    bosTokenId: specialId("bos_token_id", config.bos_token_id),
    eosTokenId: specialId("eos_token_id", config.eos_token_id),
    pastNames,
    presentNames,
    hasPositionIds: inputNames.has("position_ids"),
    hasTreeMask:
      inputNames.has("position_ids") &&
      tensorMetadata(inputs.find((input) => input.name === "attention_mask")).shape[1] === TREE_MASK_WIDTH,
    hasUseCacheBranch: inputNames.has("use_cache_branch"),
    kvBytesPerToken: kvBytesPerToken(numLayers, numKvHeads, headDim),
    ...medusaLayout(outputs, vocabSize),
  };
}

/** The heads of a graph with Medusa outputs: both outputs or neither, with fixed head count and widths. */
function medusaLayout(
  outputs: readonly ValueMetadata[],
  vocabSize: number,
): Pick<DecoderLayout, "medusaHeads" | "hiddenSize"> {
  const heads = outputs.find((o) => o.name === "medusa_logits");
  const hidden = outputs.find((o) => o.name === "hidden_states");
  if (heads === undefined && hidden === undefined) return { medusaHeads: 0, hiddenSize: 0 };
  const [count, width] = tensorMetadata(heads).shape.slice(2);
  const hiddenSize = tensorMetadata(hidden).shape[2];
  if (typeof count !== "number" || width !== vocabSize || typeof hiddenSize !== "number") {
    throw new UnsupportedModelError(
      "medusa_logits must be [batch, seq, heads, vocab] and hidden_states [batch, seq, dim]",
    );
  }
  return { medusaHeads: count, hiddenSize };
}

/** Bytes of KV cache one token occupies: a key and a value per layer and KV head, float32 (the only cache type run). */
export function kvBytesPerToken(numLayers: number, numKvHeads: number, headDim: number): number {
  return numLayers * 2 * numKvHeads * headDim * FLOAT32_BYTES;
}

function tensorMetadata(metadata: ValueMetadata | undefined): InferenceSession.TensorValueMetadata {
  if (metadata === undefined || !metadata.isTensor) {
    throw new UnsupportedModelError(`${metadata?.name ?? "a required value"} is not a tensor`);
  }
  return metadata;
}

/** A dimension fixed in the graph wins; config.json must agree with it, and must supply it when the graph does not. */
function dimension(field: string, inGraph: number | string | undefined, inConfig: number | undefined): number {
  if (typeof inGraph === "number" && inGraph > 0) {
    if (inConfig !== undefined && inConfig !== inGraph) {
      throw new UnsupportedModelError(`config.json says ${field} ${inConfig}, the graph has ${inGraph}`);
    }
    return inGraph;
  }
  if (inConfig === undefined || !Number.isInteger(inConfig) || inConfig <= 0) {
    throw new UnsupportedModelError(`config.json gives no usable ${field} and the graph leaves it symbolic`);
  }
  return inConfig;
}

function specialId(field: string, value: number | number[] | null | undefined): number {
  const id = Array.isArray(value) ? value[0] : value;
  if (typeof id !== "number") {
    throw new UnsupportedModelError(`config.json (or generation_config.json) gives no ${field}`);
  }
  return id;
}
