import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { InferenceSession } from "onnxruntime-node";
import { decoderLayout, TREE_MASK_WIDTH } from "../../services/runtime/decoder-layout.ts";
import type { HfConfig } from "../../services/runtime/model-files.ts";
import { UnsupportedModelError } from "../../services/runtime/runtime-errors.ts";

type Metadata = InferenceSession.ValueMetadata;
type Shape = readonly (number | string)[];

function tensor(name: string, type: InferenceSession.TensorValueMetadata["type"], shape: Shape): Metadata {
  return { name, isTensor: true, type, shape };
}

/** Session metadata of an Optimum-style decoder export. */
function exportMetadata(options: {
  layers: number;
  kvHeads: number | string;
  headDim: number | string;
  vocab: number | string;
  cacheType?: "float32" | "float16";
  positionIds?: boolean;
  /** Name of attention_mask's width (Optimum's by default). */
  maskWidth?: string;
}) {
  const cache = options.cacheType ?? "float32";
  const kvShape = ["batch_size", options.kvHeads, "past_sequence_length", options.headDim];
  const inputs: Metadata[] = [
    tensor("input_ids", "int64", ["batch_size", "sequence_length"]),
    tensor("attention_mask", "int64", ["batch_size", options.maskWidth ?? "total_sequence_length"]),
  ];
  if (options.positionIds !== false) {
    inputs.push(tensor("position_ids", "int64", ["batch_size", "sequence_length"]));
  }
  const outputs: Metadata[] = [tensor("logits", "float32", ["batch_size", "sequence_length", options.vocab])];
  for (let i = 0; i < options.layers; i++) {
    for (const kind of ["key", "value"]) {
      inputs.push(tensor(`past_key_values.${i}.${kind}`, cache, kvShape));
      outputs.push(tensor(`present.${i}.${kind}`, cache, kvShape));
    }
  }
  return { inputs, outputs };
}

const LLAMA_CONFIG: HfConfig = {
  model_type: "llama",
  vocab_size: 512,
  hidden_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  max_position_embeddings: 256,
  bos_token_id: 1,
  eos_token_id: [2, 7],
};

describe("decoderLayout", () => {
  test("takes fixed dimensions from the graph and the rest from config.json", () => {
    const { inputs, outputs } = exportMetadata({ layers: 2, kvHeads: 4, headDim: 8, vocab: 512 });
    const layout = decoderLayout(inputs, outputs, LLAMA_CONFIG);
    assert.equal(layout.numLayers, 2);
    assert.equal(layout.numKvHeads, 4);
    assert.equal(layout.headDim, 8);
    assert.equal(layout.vocabSize, 512);
    assert.equal(layout.contextLength, 256);
    assert.equal(layout.eosTokenId, 2, "the first of several EOS ids");
    assert.equal(layout.kvBytesPerToken, 2 * 2 * 4 * 8 * 4);
    assert.deepEqual(layout.pastNames, [
      "past_key_values.0.key",
      "past_key_values.0.value",
      "past_key_values.1.key",
      "past_key_values.1.value",
    ]);
    assert.deepEqual(layout.presentNames, ["present.0.key", "present.0.value", "present.1.key", "present.1.value"]);
    assert.equal(layout.hasPositionIds, true);
    assert.equal(layout.hasTreeMask, false, "an Optimum export reads no tree mask");
  });

  test("takes a tree mask from graphs whose attention_mask width says so and that take position_ids", () => {
    const shape = { layers: 2, kvHeads: 4, headDim: 8, vocab: 512, maskWidth: TREE_MASK_WIDTH };
    const tree = exportMetadata(shape);
    assert.equal(decoderLayout(tree.inputs, tree.outputs, LLAMA_CONFIG).hasTreeMask, true);
    const noPositions = exportMetadata({ ...shape, positionIds: false });
    assert.equal(decoderLayout(noPositions.inputs, noPositions.outputs, LLAMA_CONFIG).hasTreeMask, false);
  });

  test("reads GPT-2 spellings when the graph leaves dimensions symbolic, and tolerates a missing position_ids", () => {
    const { inputs, outputs } = exportMetadata({
      layers: 3,
      kvHeads: "num_heads",
      headDim: "head_size",
      vocab: "vocab",
      positionIds: false,
    });
    const gpt2: HfConfig = {
      model_type: "gpt2",
      vocab_size: 50257,
      n_embd: 96,
      n_layer: 3,
      n_head: 4,
      n_positions: 1024,
      bos_token_id: 50256,
      eos_token_id: 50256,
    };
    const layout = decoderLayout(inputs, outputs, gpt2);
    assert.equal(layout.numKvHeads, 4);
    assert.equal(layout.headDim, 24);
    assert.equal(layout.vocabSize, 50257);
    assert.equal(layout.contextLength, 1024);
    assert.equal(layout.hasPositionIds, false);
  });

  test("rejects float16 caches, missing inputs and disagreements with config.json", () => {
    const half = exportMetadata({ layers: 2, kvHeads: 4, headDim: 8, vocab: 512, cacheType: "float16" });
    assert.throws(() => decoderLayout(half.inputs, half.outputs, LLAMA_CONFIG), {
      name: "UnsupportedModelError",
      message: /float16; only float32 caches are supported/,
    });
    const good = exportMetadata({ layers: 2, kvHeads: 4, headDim: 8, vocab: 512 });
    const noMask = good.inputs.filter((input) => input.name !== "attention_mask");
    assert.throws(() => decoderLayout(noMask, good.outputs, LLAMA_CONFIG), /no "attention_mask" input/);
    const noPresent = good.outputs.filter((output) => output.name !== "present.1.value");
    assert.throws(() => decoderLayout(good.inputs, noPresent, LLAMA_CONFIG), UnsupportedModelError);
    assert.throws(
      () => decoderLayout(good.inputs, good.outputs, { ...LLAMA_CONFIG, num_key_value_heads: 8 }),
      /num_key_value_heads 8, the graph has 4/,
    );
    assert.throws(
      () => decoderLayout(good.inputs, good.outputs, { ...LLAMA_CONFIG, num_hidden_layers: 3 }),
      /3 layers, the graph has 2/,
    );
    const { max_position_embeddings: _, ...noContext } = LLAMA_CONFIG;
    assert.throws(() => decoderLayout(good.inputs, good.outputs, noContext), /max_position_embeddings/);
    const legacy = { inputs: [good.inputs[0], good.inputs[1], tensor("past_key_values", "float32", [2])] };
    assert.throws(() => decoderLayout(legacy.inputs, good.outputs, LLAMA_CONFIG), /past_key_values\.\{i\}\.key\|value/);
  });
});
