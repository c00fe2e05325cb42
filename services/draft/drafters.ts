/**
 * The drafters a draft service serves, built from the engine's implementations (services/engine/): model drafters
 * over ONNX models (the int4 draft, early-exit models, a cost-scaled draft) and the n-gram drafter. The service is a
 * network face over these; it never proposes tokens itself.
 */
import { quantise } from "../../proto/draft-distribution.ts";
import type { ServiceDrafterSpec } from "../config/drafter-list.ts";
import type { Drafter } from "../engine/drafter.ts";
import { ModelDrafter } from "../engine/model-drafter.ts";
import { NgramDrafter } from "../engine/ngram-drafter.ts";
import { resolveModel } from "../runtime/model-files.ts";
import { OnnxCausalLM } from "../runtime/onnx-causal-lm.ts";
import type { RuntimeOptionsInput } from "../runtime/runtime-config.ts";

export interface ServedDrafter {
  readonly spec: ServiceDrafterSpec;
  readonly drafter: Drafter;
  /** KV cache bytes one cached token costs (0 for model-free drafters): sizes evictions before a proposal. */
  readonly kvBytesPerToken: number;
  /** Longest history the drafter can hold (Infinity for model-free drafters). */
  readonly contextLength: number;
  close(): Promise<void>;
}

export interface LoadDraftersOptions {
  /** Where model names are looked up (paths are taken as they are). */
  readonly modelsDir: string;
  /** Execution provider, threads. The service's memory cap is enforced by its sequence table, which evicts. */
  readonly runtime: RuntimeOptionsInput;
}

export async function loadDrafter(spec: ServiceDrafterSpec, options: LoadDraftersOptions): Promise<ServedDrafter> {
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
  specs: readonly ServiceDrafterSpec[],
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
