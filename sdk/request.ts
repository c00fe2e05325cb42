/**
 * The SDK's request shape: a flat, snake_case description of one generation (the same names as the CLI flags and
 * the JSON output), and its translation into the wire GenerateRequest. Pure.
 */
import type { BatchItem } from "./gen/specgate/v1/BatchItem.ts";
import type { GenerateRequest } from "./gen/specgate/v1/GenerateRequest.ts";
import type { SpeculationSettings } from "./gen/specgate/v1/SpeculationSettings.ts";

export type AcceptanceName = "lossless" | "lossy-top-k" | "lossy-typical";

export interface GenerateInput {
  /** Text (tokenized by the gateway, BOS added) or token ids (used verbatim). */
  prompt: string | readonly number[];
  /** Tokens to generate (gateway default when absent). */
  max_tokens?: number;
  /** 0 or absent: greedy. */
  temperature?: number;
  top_k?: number;
  top_p?: number;
  /** Seed of all random draws; the response reports the one used. */
  seed?: number;
  stop?: readonly string[];
  /** Drafter name (`listModels()` lists them); "none" disables speculation. */
  drafter?: string;
  /** Fixed speculation length, or "adaptive" (the policy picks K per round within k_min..k_max). */
  k?: number | "adaptive";
  k_min?: number;
  k_max?: number;
  /**
   * Draft token trees (K deep, `width` children per node, `nodes` in all) instead of chains; lossless only. `adaptive`:
   * each round the gateway picks the chain or this shape, whichever has given more tokens per millisecond.
   */
  tree?: { width: number; nodes: number; adaptive?: boolean };
  /**
   * Lookahead decoding's Jacobi window W, n-gram size N and candidates G, for a drafter of kind "lookahead" (absent
   * fields: the replicas' defaults).
   */
  lookahead?: { window?: number; ngram?: number; candidates?: number };
  /** "lossless" (default) or an opt-in LOSSY relaxed rule that changes the output distribution. */
  acceptance?: AcceptanceName;
  /** Parameters of the lossy rules: top-k agreement, typical acceptance thresholds. */
  relaxed_top_k?: number;
  relaxed_epsilon?: number;
  relaxed_delta?: number;
  tenant_id?: string;
  user_id?: string;
  model?: string;
  request_id?: string;
}

const ACCEPTANCE_MODES = {
  lossless: "ACCEPTANCE_MODE_LOSSLESS",
  "lossy-top-k": "ACCEPTANCE_MODE_LOSSY_TOP_K",
  "lossy-typical": "ACCEPTANCE_MODE_LOSSY_TYPICAL",
} as const;

export const ACCEPTANCE_NAMES = Object.keys(ACCEPTANCE_MODES) as AcceptanceName[];

function speculationSettings(input: GenerateInput): SpeculationSettings {
  const settings: SpeculationSettings = { drafter: input.drafter ?? "" };
  if (typeof input.k === "number") settings.fixed_k = input.k;
  else if (input.k === "adaptive" || input.k_min !== undefined || input.k_max !== undefined) {
    settings.adaptive = { min_k: input.k_min ?? 0, max_k: input.k_max ?? 0 };
  }
  if (input.tree) {
    const { width, nodes, adaptive = false } = input.tree;
    settings.tree = { shape: { width, nodes }, adaptive };
  }
  if (input.lookahead) {
    const { window = 0, ngram = 0, candidates = 0 } = input.lookahead;
    settings.lookahead = { window, ngram, candidates };
  }
  if (input.acceptance) settings.acceptance = ACCEPTANCE_MODES[input.acceptance];
  if (input.relaxed_top_k !== undefined || input.relaxed_epsilon !== undefined || input.relaxed_delta !== undefined) {
    settings.relaxed = {
      top_k: input.relaxed_top_k ?? 0,
      epsilon: input.relaxed_epsilon ?? 0,
      delta: input.relaxed_delta ?? 0,
    };
  }
  return settings;
}

export function toGenerateRequest(input: GenerateInput): GenerateRequest {
  const request: GenerateRequest = {
    sampling: {
      temperature: input.temperature ?? 0,
      top_k: input.top_k ?? 0,
      ...(input.top_p !== undefined && { top_p: input.top_p }),
      ...(input.seed !== undefined && { seed: input.seed }),
    },
    stop: input.stop ? [...input.stop] : [],
    speculation: speculationSettings(input),
    tenant_id: input.tenant_id ?? "",
    user_id: input.user_id ?? "",
    model: input.model ?? "",
    request_id: input.request_id ?? "",
  };
  if (typeof input.prompt === "string") request.text = input.prompt;
  else request.token_ids = { ids: [...input.prompt] };
  if (input.max_tokens !== undefined) request.max_tokens = input.max_tokens;
  return request;
}

/** One item of a batch: a generation as above, with the caller's id for it (unique within the batch when set). */
export type BatchItemInput = GenerateInput & { custom_id?: string };

export function toBatchItem(input: BatchItemInput): BatchItem {
  const { custom_id = "", ...generation } = input;
  return { custom_id, request: toGenerateRequest(generation) };
}
