/**
 * Where a model's files are: a directory in the Hugging Face Optimum / transformers.js layout (config.json,
 * onnx/model.onnx or model.onnx, a tokenizer), named by a path or by its name under the project's models/ folder.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { UnsupportedModelError } from "./runtime-errors.ts";

export const MODELS_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../models");

/** The graph files a decoder directory may hold, most specific first. */
const ONNX_CANDIDATES = [
  "onnx/model.onnx",
  "model.onnx",
  "onnx/decoder_model_merged.onnx",
  "decoder_model_merged.onnx",
];

export interface ModelFiles {
  /** Short name: the directory's name. */
  readonly name: string;
  readonly dir: string;
  readonly onnxPath: string;
  readonly config: HfConfig;
}

/** The config.json fields the runtime reads (Llama, Qwen, SmolLM and GPT-2 spellings). */
export interface HfConfig {
  readonly model_type?: string;
  readonly vocab_size?: number;
  readonly hidden_size?: number;
  readonly n_embd?: number;
  readonly num_hidden_layers?: number;
  readonly n_layer?: number;
  readonly num_attention_heads?: number;
  readonly n_head?: number;
  readonly num_key_value_heads?: number;
  readonly head_dim?: number;
  readonly max_position_embeddings?: number;
  readonly n_positions?: number;
  readonly bos_token_id?: number | number[] | null;
  readonly eos_token_id?: number | number[] | null;
}

/**
 * Resolves `model` to its files: an existing directory (or .onnx file inside one) is taken as is, otherwise the name is
 * looked up under models/.
 */
export function resolveModel(model: string, modelsRoot = MODELS_ROOT): ModelFiles {
  const candidates = [resolve(model), join(modelsRoot, model)];
  const found = candidates.find((path) => existsSync(path));
  if (found === undefined) {
    throw new UnsupportedModelError(`model "${model}" not found (looked at ${candidates.join(" and ")})`);
  }
  if (statSync(found).isFile()) {
    const dir = basename(dirname(found)) === "onnx" ? dirname(dirname(found)) : dirname(found);
    return { name: basename(dir), dir, onnxPath: found, config: readConfig(dir) };
  }
  const onnx = ONNX_CANDIDATES.map((file) => join(found, file)).find((path) => existsSync(path));
  if (onnx === undefined) {
    throw new UnsupportedModelError(`no ONNX graph in ${found} (expected one of ${ONNX_CANDIDATES.join(", ")})`);
  }
  return { name: basename(found), dir: found, onnxPath: onnx, config: readConfig(found) };
}

function readConfig(dir: string): HfConfig {
  const path = join(dir, "config.json");
  if (!existsSync(path)) {
    throw new UnsupportedModelError(`${path} is missing`);
  }
  const config = JSON.parse(readFileSync(path, "utf8")) as HfConfig;
  const generationPath = join(dir, "generation_config.json");
  if (existsSync(generationPath)) {
    // generation_config.json carries the special ids when config.json leaves them out.
    const generation = JSON.parse(readFileSync(generationPath, "utf8")) as Pick<
      HfConfig,
      "bos_token_id" | "eos_token_id"
    >;
    return { bos_token_id: generation.bos_token_id, eos_token_id: generation.eos_token_id, ...definedFields(config) };
  }
  return config;
}

function definedFields<T extends object>(object: T): Partial<T> {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined && value !== null)) as T;
}
