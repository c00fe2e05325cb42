/**
 * Checks a GenerateRequest and resolves it into what the round loop runs: prompt ids, limits, sampling with its seed,
 * stop strings, drafter, K policy, acceptance rule. Every problem is reported at once, each naming its field; the
 * server answers them as INVALID_ARGUMENT. Pure: tokenization and the seed come in as arguments.
 */
import type { AcceptanceMode__Output } from "../gen/specgate/v1/AcceptanceMode.ts";
import type { GenerateRequest__Output } from "../gen/specgate/v1/GenerateRequest.ts";
import type { RelaxedAcceptance__Output } from "../gen/specgate/v1/RelaxedAcceptance.ts";
import { enumNames } from "../proto/codec.ts";
import type { KPolicyConfig } from "../services/engine/k-policy.ts";
import { MAX_SEED } from "../services/engine/rng.ts";
import { TREE_LIMITS } from "../services/engine/token-tree.ts";
import type { Branching } from "../services/engine/tree-policy.ts";

export const NO_DRAFTER = "none";
const MAX_STOP_STRINGS = 16;
const MAX_TREE_WIDTH = 8;
const ACCEPTANCE_MODES = enumNames<AcceptanceMode__Output>("AcceptanceMode");

export interface ValidationContext {
  /** Target model name (requests may name it or leave `model` empty). */
  readonly model: string;
  /** Prompt + generated tokens at most. */
  readonly contextLength: number;
  /** Token ids a prompt may hold: [0, vocabSize). */
  readonly vocabSize: number;
  /** Text prompt → ids, BOS included as the model expects. */
  encode(text: string): number[];
  /** Drafter names served (without "none"). */
  readonly drafters: readonly string[];
  readonly defaultDrafter: string;
  /** K policy of requests that set none. */
  readonly defaultK: number | "adaptive";
  readonly maxK: number;
  readonly defaultMaxTokens: number;
  readonly maxTokensLimit: number;
}

/** Wire sampling parameters (SamplingParams) after checks, the seed always set. */
export interface ResolvedSampling {
  readonly temperature: number;
  readonly top_k: number;
  readonly top_p?: number;
  readonly seed: number;
}

export interface ValidRequest {
  readonly prompt: number[];
  readonly maxNewTokens: number;
  /** Wire sampling parameters with the seed resolved (the request's, else the one given to validate). */
  readonly sampling: ResolvedSampling;
  readonly stopStrings: string[];
  /** A served drafter, or "none" (plain decoding). */
  readonly drafter: string;
  readonly kPolicy: KPolicyConfig;
  readonly acceptance: AcceptanceMode__Output;
  readonly relaxed: RelaxedAcceptance__Output | null;
  /** Draft token trees (K deep) instead of chains. */
  readonly tree?: TreeRequest;
  readonly tenantId: string;
  readonly userId: string;
}

/** A request's trees: always this shape, or each round the chain or this shape by measured rate (`adaptive`). */
export interface TreeRequest {
  readonly shape: Branching;
  readonly adaptive: boolean;
}

export class InvalidRequestError extends Error {
  override readonly name = "InvalidRequestError";
  constructor(readonly problems: readonly string[]) {
    super(problems.join("; "));
  }
}

function promptOf(request: GenerateRequest__Output, ctx: ValidationContext, problems: string[]): number[] {
  if (request.prompt === "token_ids") {
    const ids = request.token_ids?.ids ?? [];
    if (ids.length === 0) problems.push("prompt is empty: token_ids holds no ids");
    const bad = ids.find((id) => !(Number.isInteger(id) && id >= 0 && id < ctx.vocabSize));
    if (bad !== undefined) problems.push(`token_ids: id ${bad} is outside the vocabulary [0, ${ctx.vocabSize})`);
    return ids;
  }
  const text = request.text ?? "";
  if (text.length === 0) {
    problems.push("prompt is empty: set text or token_ids");
    return [];
  }
  return ctx.encode(text);
}

function maxTokensOf(request: GenerateRequest__Output, ctx: ValidationContext, problems: string[]): number {
  const value = request.max_tokens;
  if (value === undefined) return ctx.defaultMaxTokens;
  if (!(Number.isInteger(value) && value >= 1)) problems.push(`max_tokens must be at least 1, got ${value}`);
  else if (value > ctx.maxTokensLimit) {
    problems.push(`max_tokens ${value} exceeds this gateway's limit of ${ctx.maxTokensLimit}`);
  }
  return value;
}

function samplingOf(request: GenerateRequest__Output, seed: number, problems: string[]): ResolvedSampling {
  const wire = request.sampling;
  const temperature = wire?.temperature ?? 0;
  const topK = wire?.top_k ?? 0;
  const topP = wire?.top_p;
  const chosenSeed = wire?.seed ?? seed;
  if (!(Number.isFinite(temperature) && temperature >= 0)) {
    problems.push(`sampling.temperature must be a finite number >= 0, got ${temperature}`);
  }
  if (!(Number.isInteger(topK) && topK >= 0)) problems.push(`sampling.top_k must be >= 0, got ${topK}`);
  if (topP !== undefined && !(topP > 0 && topP <= 1)) problems.push(`sampling.top_p must lie in (0, 1], got ${topP}`);
  if (!(Number.isSafeInteger(chosenSeed) && chosenSeed >= 0 && chosenSeed <= MAX_SEED)) {
    problems.push(`sampling.seed must be an integer in [0, 2^53 - 1], got ${chosenSeed}`);
  }
  return { temperature, top_k: topK, ...(topP !== undefined && { top_p: topP }), seed: chosenSeed };
}

function kPolicyOf(request: GenerateRequest__Output, drafter: string, ctx: ValidationContext, problems: string[]) {
  const spec = request.speculation;
  if (drafter === NO_DRAFTER) return { kind: "fixed", k: 0 } as const;
  if (spec?.length === "fixed_k") {
    const k = spec.fixed_k ?? 0;
    if (k > ctx.maxK) problems.push(`speculation.fixed_k ${k} exceeds this gateway's limit of ${ctx.maxK}`);
    return { kind: "fixed", k } as const;
  }
  if (spec?.length === "adaptive" || ctx.defaultK === "adaptive") {
    const minK = spec?.adaptive?.min_k ?? 0;
    const maxK = spec?.adaptive?.max_k || ctx.maxK;
    if (maxK > ctx.maxK)
      problems.push(`speculation.adaptive.max_k ${maxK} exceeds this gateway's limit of ${ctx.maxK}`);
    if (minK > maxK) problems.push(`speculation.adaptive.min_k ${minK} exceeds max_k ${maxK}`);
    return { kind: "adaptive", kMin: minK, kMax: maxK } as const;
  }
  return { kind: "fixed", k: Math.min(ctx.defaultK, ctx.maxK) } as const;
}

function relaxedOf(request: GenerateRequest__Output, problems: string[]): RelaxedAcceptance__Output | null {
  const relaxed = request.speculation?.relaxed ?? null;
  for (const field of ["epsilon", "delta"] as const) {
    const value = relaxed?.[field] ?? 0;
    if (!(Number.isFinite(value) && value >= 0))
      problems.push(`speculation.relaxed.${field} must be >= 0, got ${value}`);
  }
  return relaxed;
}

function treeOf(request: GenerateRequest__Output, lossless: boolean, problems: string[]): TreeRequest | undefined {
  const tree = request.speculation?.tree;
  if (!tree) return undefined;
  const width = tree.shape?.width ?? 0;
  const nodes = tree.shape?.nodes ?? 0;
  if (!(width >= 1 && width <= MAX_TREE_WIDTH)) {
    problems.push(`speculation.tree.shape.width must lie in 1..${MAX_TREE_WIDTH}, got ${width}`);
  }
  if (!(nodes >= 1 && nodes <= TREE_LIMITS.maxNodes)) {
    problems.push(`speculation.tree.shape.nodes must lie in 1..${TREE_LIMITS.maxNodes}, got ${nodes}`);
  }
  if (!lossless) problems.push("speculation.tree is verified with lossless acceptance only");
  return { shape: { width, nodes }, adaptive: tree.adaptive };
}

/** The request resolved, or InvalidRequestError listing every problem. `seed` is used when the request sets none. */
export function validateRequest(request: GenerateRequest__Output, ctx: ValidationContext, seed: number): ValidRequest {
  const problems: string[] = [];
  if (request.model !== "" && request.model !== ctx.model) {
    problems.push(`model "${request.model}" is not served here (this gateway serves "${ctx.model}")`);
  }
  const prompt = promptOf(request, ctx, problems);
  if (prompt.length >= ctx.contextLength) {
    problems.push(
      `prompt is ${prompt.length} tokens; the model's context holds ${ctx.contextLength} (prompt + output)`,
    );
  }
  const maxNewTokens = maxTokensOf(request, ctx, problems);
  const sampling = samplingOf(request, seed, problems);
  const stopStrings = request.stop;
  if (stopStrings.some((s) => s.length === 0)) problems.push("stop: empty stop strings are not allowed");
  if (stopStrings.length > MAX_STOP_STRINGS) problems.push(`stop: at most ${MAX_STOP_STRINGS} stop strings`);

  const drafter = request.speculation?.drafter || ctx.defaultDrafter;
  if (drafter !== NO_DRAFTER && !ctx.drafters.includes(drafter)) {
    problems.push(`unknown drafter "${drafter}"; available: ${[...ctx.drafters, NO_DRAFTER].join(", ")}`);
  }
  const kPolicy = kPolicyOf(request, drafter, ctx, problems);
  const acceptance = request.speculation?.acceptance ?? "ACCEPTANCE_MODE_UNSPECIFIED";
  // proto3 keeps enum numbers the schema does not name; they arrive as numbers and must stop here, not at a replica.
  if (!ACCEPTANCE_MODES.has(acceptance)) {
    problems.push(
      `speculation.acceptance ${acceptance} is not an AcceptanceMode; known: ${[...ACCEPTANCE_MODES].join(", ")}`,
    );
  }
  const relaxed = relaxedOf(request, problems);
  const lossless = acceptance === "ACCEPTANCE_MODE_UNSPECIFIED" || acceptance === "ACCEPTANCE_MODE_LOSSLESS";
  const tree = treeOf(request, lossless, problems);
  if (problems.length > 0) throw new InvalidRequestError(problems);
  return {
    prompt,
    maxNewTokens,
    sampling,
    stopStrings,
    drafter,
    kPolicy,
    acceptance: acceptance === "ACCEPTANCE_MODE_UNSPECIFIED" ? "ACCEPTANCE_MODE_LOSSLESS" : acceptance,
    relaxed,
    ...(tree && { tree }),
    tenantId: request.tenant_id,
    userId: request.user_id,
  };
}
