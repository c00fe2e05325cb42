/** Finds and loads the tokenizer of a model directory. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { HfTokenizer, type HfTokenizerConfig } from "./hf.ts";
import { LLAMA2C_TOKENIZER_FILE, Llama2cTokenizer } from "./llama2c.ts";
import type { Tokenizer } from "./tokenizer.ts";

async function readIfPresent(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`cannot read ${path}: ${(error as Error).message}`);
  }
}

function parseJson(bytes: Buffer, path: string): object {
  try {
    const value: unknown = JSON.parse(bytes.toString("utf8"));
    if (typeof value !== "object" || value === null) throw new Error("not a JSON object");
    return value;
  } catch (error) {
    throw new Error(`${path}: invalid JSON (${(error as Error).message})`);
  }
}

/**
 * Loads `tokenizer.json` (with `tokenizer_config.json` when present) if the directory has one, else the llama2.c
 * `tokenizer.bin`.
 */
export async function loadTokenizer(modelDir: string): Promise<Tokenizer> {
  const jsonPath = join(modelDir, "tokenizer.json");
  const json = await readIfPresent(jsonPath);
  if (json !== undefined) {
    const configPath = join(modelDir, "tokenizer_config.json");
    const config = await readIfPresent(configPath);
    const parsedConfig = config === undefined ? {} : (parseJson(config, configPath) as HfTokenizerConfig);
    return new HfTokenizer(parseJson(json, jsonPath), parsedConfig, jsonPath);
  }
  const binPath = join(modelDir, LLAMA2C_TOKENIZER_FILE);
  const bin = await readIfPresent(binPath);
  if (bin !== undefined) return Llama2cTokenizer.fromBytes(bin, binPath);
  throw new Error(`no tokenizer in ${modelDir}: expected tokenizer.json (Hugging Face) or tokenizer.bin (llama2.c)`);
}
