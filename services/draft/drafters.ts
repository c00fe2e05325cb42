/**
 * The drafters a draft service serves, built from the engine's implementations (services/engine/): model drafters
 * over ONNX models (the int4 draft, early-exit models, a cost-scaled draft) and the n-gram drafter. The service is a
 * network face over these; it never proposes tokens itself.
 */
import { quantise } from "../../proto/draft-distribution.ts";
import type { Drafter } from "../engine/drafter.ts";
import { ModelDrafter } from "../engine/model-drafter.ts";
import { NgramDrafter } from "../engine/ngram-drafter.ts";
import { resolveModel } from "../runtime/model-files.ts";
import { OnnxCausalLM } from "../runtime/onnx-causal-lm.ts";
import type { RuntimeOptionsInput } from "../runtime/runtime-config.ts";

/** One served drafter: `name=<model directory>` runs a model drafter, `name=ngram` the prompt-lookup drafter. */
export type DrafterSpec =
  | { readonly name: string; readonly kind: "model"; readonly model: string }
  | { readonly name: string; readonly kind: "ngram" };

export interface ServedDrafter {
  readonly spec: DrafterSpec;
  readonly drafter: Drafter;
  /** KV cache bytes one cached token costs (0 for model-free drafters): sizes evictions before a proposal. */
  readonly kvBytesPerToken: number;
  /** Longest history the drafter can hold (Infinity for model-free drafters). */
  readonly contextLength: number;
  close(): Promise<void>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Parses `int4=stories260k-int4,ngram` (a bare `ngram` is short for `ngram=ngram`). */
export function parseDrafterSpecs(text: string): DrafterSpec[] {
  const specs = text
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0)
    .map((entry): DrafterSpec => {
      const [name, source = name] = entry.split("=", 2).map((part) => part.trim());
      if (!NAME.test(name)) throw new RangeError(`drafter name "${name}" must be letters, digits, ".", "_" or "-"`);
      if (name === "none") throw new RangeError(`"none" is reserved for plain decoding and cannot name a drafter`);
      if (source.length === 0) throw new RangeError(`drafter "${name}" needs a model directory or "ngram"`);
      return source === "ngram" ? { name, kind: "ngram" } : { name, kind: "model", model: source };
    });
  if (specs.length === 0) throw new RangeError("at least one drafter must be served");
  const names = new Set<string>();
  for (const { name } of specs) {
    if (names.has(name)) throw new RangeError(`drafter "${name}" is listed twice`);
    names.add(name);
  }
  return specs;
}

export interface LoadDraftersOptions {
  /** Where model names are looked up (paths are taken as they are). */
  readonly modelsDir: string;
  /** Execution provider, threads. The service's memory cap is enforced by its sequence table, which evicts. */
  readonly runtime: RuntimeOptionsInput;
}

export async function loadDrafter(spec: DrafterSpec, options: LoadDraftersOptions): Promise<ServedDrafter> {
  if (spec.kind === "ngram") {
    return {
      spec,
      drafter: new NgramDrafter(),
      kvBytesPerToken: 0,
      contextLength: Number.POSITIVE_INFINITY,
      close: async () => {},
    };
  }
  const model = await OnnxCausalLM.load(resolveModel(spec.model, options.modelsDir).dir, options.runtime);
  return {
    spec,
    // The token is drawn from the quantised q that goes on the wire, so the target divides by the very q it came from.
    drafter: new ModelDrafter(model, spec.name, { quantise }),
    kvBytesPerToken: model.info.kvBytesPerToken,
    contextLength: model.info.contextLength,
    close: () => model.close(),
  };
}

/** Loads every listed drafter (models one after another: loading is CPU-bound). Closes what loaded on failure. */
export async function loadDrafters(
  specs: readonly DrafterSpec[],
  options: LoadDraftersOptions,
): Promise<Map<string, ServedDrafter>> {
  const served = new Map<string, ServedDrafter>();
  try {
    for (const spec of specs) served.set(spec.name, await loadDrafter(spec, options));
  } catch (error) {
    await Promise.all([...served.values()].map((d) => d.close()));
    throw error;
  }
  return served;
}
