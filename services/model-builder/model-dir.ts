/**
 * Writes a model directory in the Hugging Face layout: `config.json`, `generation_config.json` and
 * `onnx/model.onnx` (weights of big models in `onnx/model.onnx_data`, which transformers.js finds through
 * config.json's `transformers.js_config`).
 */
import { createWriteStream } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { finished } from "node:stream/promises";
import { buildLlamaGraph, MICROSOFT_OPSET, OPSET, usesMicrosoftOps } from "./llama-graph.ts";
import type { LlamaWeights } from "./llama-weights.ts";
import { BOS_TOKEN_ID, EOS_TOKEN_ID, type SpecgateInfo, toHfConfig } from "./model-config.ts";
import { serializeModel } from "./onnx-graph.ts";

export const MODEL_FILE = join("onnx", "model.onnx");
export const EXTERNAL_DATA_FILE = "model.onnx_data";
/** Models with more weight bytes than this keep them in an external data file (protobuf messages stop at 2 GiB). */
const EXTERNAL_DATA_ABOVE_BYTES = 256 * 1024 * 1024;

export interface WrittenModel {
  readonly dir: string;
  /** Bytes of all weight tensors in the graph. */
  readonly weightBytes: number;
}

/** Stages of writing a model, for progress displays; `fraction` is the share of the stage done. */
export type WriteProgress = (stage: "graph" | "serialize" | "write", fraction: number) => void;

async function writeChunks(path: string, chunks: readonly Uint8Array[], onProgress: (fraction: number) => void) {
  const total = chunks.reduce((n, c) => n + c.byteLength, 0);
  let written = 0;
  const out = createWriteStream(path);
  for (const chunk of chunks) {
    if (!out.write(chunk)) await new Promise<void>((resolve) => out.once("drain", () => resolve()));
    written += chunk.byteLength;
    onProgress(written / total);
  }
  out.end();
  await finished(out);
}

/** Builds the ONNX graph of `weights` and writes the complete model directory `dir`. */
export async function writeModelDir(
  dir: string,
  weights: LlamaWeights,
  specgate: SpecgateInfo,
  onProgress: WriteProgress = () => {},
): Promise<WrittenModel> {
  onProgress("graph", 0);
  const graph = buildLlamaGraph(weights);
  onProgress("serialize", 0);
  const weightBytes = graph.weightBytes();
  const external = weightBytes > EXTERNAL_DATA_ABOVE_BYTES;
  const serialized = serializeModel(graph, {
    graphName: specgate.variant,
    opset: OPSET,
    microsoftOpset: usesMicrosoftOps(weights) ? MICROSOFT_OPSET : undefined,
    docString: `specgate ${specgate.variant} from ${specgate.source}`,
    externalDataFile: external ? EXTERNAL_DATA_FILE : undefined,
  });
  await mkdir(join(dir, "onnx"), { recursive: true });
  await rm(join(dir, "onnx", EXTERNAL_DATA_FILE), { force: true });
  onProgress("write", 0);
  if (external) {
    await writeChunks(join(dir, "onnx", EXTERNAL_DATA_FILE), serialized.externalData, (f) => onProgress("write", f));
  }
  await writeFile(join(dir, MODEL_FILE), serialized.model);
  const config = toHfConfig(weights.config, weights.classifier === null, specgate, external);
  await writeFile(join(dir, "config.json"), `${JSON.stringify(config, null, 2)}\n`);
  const generation = { bos_token_id: BOS_TOKEN_ID, eos_token_id: EOS_TOKEN_ID };
  await writeFile(join(dir, "generation_config.json"), `${JSON.stringify(generation, null, 2)}\n`);
  return { dir, weightBytes };
}
