/**
 * Checks a GenerateRequest and resolves it into what the round loop runs: prompt ids, limits, sampling with its seed,
 * stop strings, drafter, K policy, acceptance rule. Every field has its rule, most of them as one line of the tables
 * below; every problem is reported at once, each naming its field, and the server answers them as INVALID_ARGUMENT.
 * Nothing the gateway has not checked reaches the draft service or a replica. Pure: tokenization and the seed come
 * in as arguments.
 */
import type { AcceptanceMode__Output } from "../gen/specgate/v1/AcceptanceMode.ts";
import type { GenerateRequest__Output } from "../gen/specgate/v1/GenerateRequest.ts";
import type { LookaheadSettings__Output } from "../gen/specgate/v1/LookaheadSettings.ts";
import type { RelaxedAcceptance__Output } from "../gen/specgate/v1/RelaxedAcceptance.ts";
import type { SubmitBatchRequest__Output } from "../gen/specgate/v1/SubmitBatchRequest.ts";
import { enumNames } from "../proto/codec.ts";
import type { KPolicyConfig } from "../services/engine/k-policy.ts";
import { LOOKAHEAD_LIMITS } from "../services/engine/lookahead.ts";
import { MAX_SEED } from "../services/engine/rng.ts";
import { TREE_LIMITS } from "../services/engine/token-tree.ts";
import type { Branching } from "../services/engine/tree-policy.ts";
import {
  BATCH_LIMITS,
  MAX_LABEL_CHARS,
  MAX_NAME_CHARS,
  MAX_PROMPT_CHARS_PER_TOKEN,
  MAX_STOP_CHARS,
  MAX_STOP_STRINGS,
  MAX_TEMPERATURE,
  quoted,
} from "./request-limits.ts";
import { undecodableProblem } from "./undecodable.ts";

export const NO_DRAFTER = "none";
/** Children per tree node a request may ask for. */
const MAX_TREE_WIDTH = 8;

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
  /** Those of `drafters` the target replicas run themselves (Medusa heads, Lookahead decoding): name → kind. */
  readonly selfDrafters: ReadonlyMap<string, string>;
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
  /** The kind of self-drafter ("medusa", "lookahead") when the replicas run the drafter: its rounds are token trees
   * the replica drafts, without the draft service. */
  readonly selfDrafter?: string;
  /** Lookahead decoding's W, N and G (zeros: the replicas' defaults). */
  readonly lookahead?: LookaheadSettings__Output;
  readonly kPolicy: KPolicyConfig;
  readonly acceptance: AcceptanceMode__Output;
  readonly relaxed: RelaxedAcceptance__Output | null;
  /** Draft token trees (K deep) instead of chains. */
  readonly tree?: TreeRequest;
  readonly tenantId: string;
  readonly userId: string;
}

/** A request's trees: always this shape, or each round the chain or a tree within it, by the tree policy (`adaptive`). */
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

type Request = GenerateRequest__Output;

/** A numeric field: finite, an integer where asked, within its bounds. Unset (undefined) passes. */
interface NumberRule<Message = Request> {
  readonly field: string;
  readonly value: (message: Message) => number | undefined;
  readonly integer?: boolean;
  readonly min: number;
  /** The value must exceed `min` rather than reach it. */
  readonly aboveMin?: boolean;
  readonly max?: number;
  /** Largest value by this gateway's configuration or model. */
  readonly limit?: (ctx: ValidationContext) => number;
}

const speculation = (request: Request) => request.speculation ?? undefined;
const adaptive = (request: Request) =>
  speculation(request)?.length === "adaptive" ? (speculation(request)?.adaptive ?? undefined) : undefined;

const NUMBER_RULES: readonly NumberRule[] = [
  { field: "max_tokens", value: (r) => r.max_tokens, integer: true, min: 1, limit: (ctx) => ctx.maxTokensLimit },
  { field: "sampling.temperature", value: (r) => r.sampling?.temperature, min: 0, max: MAX_TEMPERATURE },
  { field: "sampling.top_k", value: (r) => r.sampling?.top_k, integer: true, min: 0 },
  { field: "sampling.top_p", value: (r) => r.sampling?.top_p, min: 0, aboveMin: true, max: 1 },
  { field: "sampling.seed", value: (r) => r.sampling?.seed, integer: true, min: 0, max: MAX_SEED },
  {
    field: "speculation.fixed_k",
    value: (r) => (speculation(r)?.length === "fixed_k" ? speculation(r)?.fixed_k : undefined),
    integer: true,
    min: 0,
    limit: (ctx) => ctx.maxK,
  },
  {
    field: "speculation.adaptive.min_k",
    value: (r) => adaptive(r)?.min_k,
    integer: true,
    min: 0,
    limit: (ctx) => ctx.maxK,
  },
  {
    field: "speculation.adaptive.max_k",
    value: (r) => adaptive(r)?.max_k,
    integer: true,
    min: 0,
    limit: (ctx) => ctx.maxK,
  },
  {
    field: "speculation.relaxed.top_k",
    value: (r) => speculation(r)?.relaxed?.top_k,
    integer: true,
    min: 0,
    limit: (ctx) => ctx.vocabSize,
  },
  { field: "speculation.relaxed.epsilon", value: (r) => speculation(r)?.relaxed?.epsilon, min: 0, max: 1 },
  { field: "speculation.relaxed.delta", value: (r) => speculation(r)?.relaxed?.delta, min: 0 },
  {
    field: "speculation.tree.shape.width",
    value: (r) => (speculation(r)?.tree ? (speculation(r)?.tree?.shape?.width ?? 0) : undefined),
    integer: true,
    min: 1,
    max: MAX_TREE_WIDTH,
  },
  {
    field: "speculation.tree.shape.nodes",
    value: (r) => (speculation(r)?.tree ? (speculation(r)?.tree?.shape?.nodes ?? 0) : undefined),
    integer: true,
    min: 1,
    max: TREE_LIMITS.maxNodes,
  },
  ...(
    [
      ["window", LOOKAHEAD_LIMITS.maxWindow],
      ["ngram", LOOKAHEAD_LIMITS.maxNgram],
      ["candidates", LOOKAHEAD_LIMITS.maxCandidates],
    ] as const
  ).map(([name, max]) => ({
    field: `speculation.lookahead.${name}`,
    value: (r: Request) => speculation(r)?.lookahead?.[name],
    integer: true,
    min: 0,
    max,
  })),
];

function numberProblem<Message>(
  rule: NumberRule<Message>,
  value: number,
  ctx: ValidationContext | undefined,
): string | undefined {
  const { field, min } = rule;
  if (!Number.isFinite(value)) return `${field} must be a finite number, got ${value}`;
  if (rule.integer && !Number.isInteger(value)) return `${field} must be an integer, got ${value}`;
  if (rule.aboveMin ? value <= min : value < min) {
    if (rule.integer) return `${field} must be at least ${min}, got ${value}`;
    return `${field} must be a finite number ${rule.aboveMin ? ">" : ">="} ${min}, got ${value}`;
  }
  if (rule.max !== undefined && value > rule.max) return `${field} must be at most ${rule.max}, got ${value}`;
  const limit = ctx && rule.limit?.(ctx);
  if (limit !== undefined && value > limit) return `${field} ${value} exceeds this gateway's limit of ${limit}`;
  return undefined;
}

/** A string field (or a list of them): length bounds, and how many the list may hold. */
interface TextRule<Message = Request> {
  readonly field: string;
  readonly values: (message: Message) => readonly string[];
  readonly maxChars: number;
  readonly nonEmpty?: boolean;
  readonly maxCount?: number;
}

const TEXT_RULES: readonly TextRule[] = [
  { field: "stop", values: (r) => r.stop, maxChars: MAX_STOP_CHARS, nonEmpty: true, maxCount: MAX_STOP_STRINGS },
  { field: "model", values: (r) => [r.model], maxChars: MAX_NAME_CHARS },
  { field: "speculation.drafter", values: (r) => [speculation(r)?.drafter ?? ""], maxChars: MAX_NAME_CHARS },
  { field: "request_id", values: (r) => [r.request_id], maxChars: MAX_LABEL_CHARS },
  { field: "tenant_id", values: (r) => [r.tenant_id], maxChars: MAX_LABEL_CHARS },
  { field: "user_id", values: (r) => [r.user_id], maxChars: MAX_LABEL_CHARS },
];

function textProblems<Message>(rule: TextRule<Message>, message: Message): string[] {
  const values = rule.values(message);
  const problems: string[] = [];
  if (rule.maxCount !== undefined && values.length > rule.maxCount) {
    problems.push(`${rule.field}: at most ${rule.maxCount} values, got ${values.length}`);
  }
  if (rule.nonEmpty && values.some((value) => value.length === 0)) {
    problems.push(`${rule.field}: empty strings are not allowed`);
  }
  const longest = Math.max(0, ...values.map((value) => value.length));
  if (longest > rule.maxChars) {
    problems.push(`${rule.field}: at most ${rule.maxChars} characters, got ${longest}`);
  }
  return problems;
}

/** An enum field: proto3 keeps numbers the schema does not name; they arrive as numbers and must stop here. */
interface EnumRule {
  readonly field: string;
  readonly enumName: string;
  readonly value: (request: Request) => string | number | undefined;
}

const ENUM_RULES: readonly EnumRule[] = [
  { field: "speculation.acceptance", enumName: "AcceptanceMode", value: (r) => speculation(r)?.acceptance },
];

const ENUM_VALUES = new Map(ENUM_RULES.map((rule) => [rule.enumName, enumNames<string>(rule.enumName)]));

function enumProblem(rule: EnumRule, value: string | number): string | undefined {
  const names = ENUM_VALUES.get(rule.enumName) ?? new Set();
  if (typeof value === "string" && names.has(value)) return undefined;
  return `${rule.field} ${value} is not a value of ${rule.enumName}; known: ${[...names].join(", ")}`;
}

function numberProblems<Message>(
  rules: readonly NumberRule<Message>[],
  message: Message,
  ctx: ValidationContext | undefined,
): string[] {
  return rules.flatMap((rule) => {
    const value = rule.value(message);
    return (value === undefined ? undefined : numberProblem(rule, value, ctx)) ?? [];
  });
}

/**
 * The problems that need no configuration and no tokenizer: a message that did not decode, strings and lists over
 * their sizes. The server checks these before authentication, so nothing oversized reaches the key check or a log.
 */
export function shapeProblems(request: Request): string[] {
  const undecodable = undecodableProblem(request, "GenerateRequest");
  if (undecodable !== undefined) return [undecodable];
  return TEXT_RULES.flatMap((rule) => textProblems(rule, request));
}

function promptOf(request: Request, ctx: ValidationContext, problems: string[]): number[] {
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
  // Tokenizing costs time in proportion to the text: a text no context could hold is refused unread.
  const maxChars = ctx.contextLength * MAX_PROMPT_CHARS_PER_TOKEN;
  if (text.length > maxChars) {
    problems.push(
      `text: at most ${maxChars} characters (${MAX_PROMPT_CHARS_PER_TOKEN} per token of the model's context), got ${text.length}`,
    );
    return [];
  }
  return ctx.encode(text);
}

function kPolicyOf(request: Request, drafter: string, ctx: ValidationContext, problems: string[]): KPolicyConfig {
  const spec = speculation(request);
  if (drafter === NO_DRAFTER) return { kind: "fixed", k: 0 };
  if (spec?.length === "fixed_k") return { kind: "fixed", k: spec.fixed_k ?? 0 };
  if (spec?.length === "adaptive" || ctx.defaultK === "adaptive") {
    const minK = adaptive(request)?.min_k ?? 0;
    const maxK = adaptive(request)?.max_k || ctx.maxK;
    if (minK > maxK) problems.push(`speculation.adaptive.min_k ${minK} exceeds max_k ${maxK}`);
    return { kind: "adaptive", kMin: minK, kMax: maxK };
  }
  return { kind: "fixed", k: Math.min(ctx.defaultK, ctx.maxK) };
}

function treeOf(request: Request, lossless: boolean, problems: string[]): TreeRequest | undefined {
  const tree = speculation(request)?.tree;
  if (!tree) return undefined;
  if (!lossless) problems.push("speculation.tree is verified with lossless acceptance only");
  return { shape: { width: tree.shape?.width ?? 0, nodes: tree.shape?.nodes ?? 0 }, adaptive: tree.adaptive };
}

/** The request resolved, or InvalidRequestError listing every problem. `seed` is used when the request sets none. */
export function validateRequest(request: Request, ctx: ValidationContext, seed: number): ValidRequest {
  const undecodable = undecodableProblem(request, "GenerateRequest");
  if (undecodable !== undefined) throw new InvalidRequestError([undecodable]);
  const problems = [
    ...TEXT_RULES.flatMap((rule) => textProblems(rule, request)),
    ...numberProblems(NUMBER_RULES, request, ctx),
  ];
  for (const rule of ENUM_RULES) {
    const value = rule.value(request);
    const problem = value === undefined ? undefined : enumProblem(rule, value);
    if (problem !== undefined) problems.push(problem);
  }
  if (request.model !== "" && request.model !== ctx.model) {
    problems.push(`model ${quoted(request.model)} is not served here (this gateway serves "${ctx.model}")`);
  }
  const prompt = promptOf(request, ctx, problems);
  if (prompt.length >= ctx.contextLength) {
    problems.push(
      `prompt is ${prompt.length} tokens; the model's context holds ${ctx.contextLength} (prompt + output)`,
    );
  }
  const drafter = speculation(request)?.drafter || ctx.defaultDrafter;
  if (drafter !== NO_DRAFTER && !ctx.drafters.includes(drafter)) {
    problems.push(`unknown drafter ${quoted(drafter)}; available: ${[...ctx.drafters, NO_DRAFTER].join(", ")}`);
  }
  const kPolicy = kPolicyOf(request, drafter, ctx, problems);
  const acceptance = speculation(request)?.acceptance ?? "ACCEPTANCE_MODE_UNSPECIFIED";
  const lossless = acceptance === "ACCEPTANCE_MODE_UNSPECIFIED" || acceptance === "ACCEPTANCE_MODE_LOSSLESS";
  const tree = treeOf(request, lossless, problems);
  const selfDrafter = ctx.selfDrafters.get(drafter);
  if (selfDrafter !== undefined && !lossless) {
    problems.push(`drafter ${quoted(drafter)} drafts token trees, which are verified with lossless acceptance only`);
  }
  const lookahead = speculation(request)?.lookahead ?? undefined;
  if (lookahead && selfDrafter !== "lookahead") {
    problems.push(`speculation.lookahead applies to a Lookahead decoding drafter, not to ${quoted(drafter)}`);
  }
  if (lookahead && lookahead.ngram === 1) problems.push("speculation.lookahead.ngram must be at least 2, got 1");
  if (problems.length > 0) throw new InvalidRequestError(problems);
  const wire = request.sampling;
  return {
    prompt,
    maxNewTokens: request.max_tokens ?? ctx.defaultMaxTokens,
    sampling: {
      temperature: wire?.temperature ?? 0,
      top_k: wire?.top_k ?? 0,
      ...(wire?.top_p !== undefined && { top_p: wire.top_p }),
      seed: wire?.seed ?? seed,
    },
    stopStrings: request.stop,
    drafter,
    ...(selfDrafter !== undefined && { selfDrafter }),
    ...(lookahead && { lookahead }),
    kPolicy,
    acceptance: acceptance === "ACCEPTANCE_MODE_UNSPECIFIED" ? "ACCEPTANCE_MODE_LOSSLESS" : acceptance,
    relaxed: speculation(request)?.relaxed ?? null,
    ...(tree && { tree }),
    tenantId: request.tenant_id,
    userId: request.user_id,
  };
}

type Submit = SubmitBatchRequest__Output;

const SUBMIT_TEXT_RULES: readonly TextRule<Submit>[] = [
  {
    field: "items",
    values: (r) => r.items.map((item) => item.custom_id),
    maxChars: MAX_LABEL_CHARS,
    maxCount: BATCH_LIMITS.maxItems,
  },
  { field: "tenant_id", values: (r) => [r.tenant_id], maxChars: MAX_LABEL_CHARS },
];

const SUBMIT_NUMBER_RULES: readonly NumberRule<Submit>[] = [
  {
    field: "completion_window_s",
    value: (r) => r.completion_window_s || undefined,
    integer: true,
    min: 1,
    max: BATCH_LIMITS.maxCompletionWindowS,
  },
  {
    field: "retention_s",
    value: (r) => r.retention_s || undefined,
    integer: true,
    min: 1,
    max: BATCH_LIMITS.maxRetentionS,
  },
];

/** A batch's items resolved: each request labelled with the batch's tenant, the batch's times with their defaults. */
export interface ValidBatch {
  readonly items: readonly { readonly customId: string; readonly request: Request }[];
  readonly completionWindowS: number;
  readonly retentionS: number;
}

/** The first problems of a batch, and how many more there were: a batch of 1000 bad items gets a short answer. */
function batchError(problems: readonly string[]): InvalidRequestError {
  const shown = problems.slice(0, BATCH_LIMITS.maxProblems);
  const more = problems.length - shown.length;
  return new InvalidRequestError(more > 0 ? [...shown, `and ${more} more problems`] : shown);
}

/** As shapeProblems, for SubmitBatch: its own strings and lists, and each item's request. */
export function batchShapeProblems(request: Submit): string[] {
  const undecodable = undecodableProblem(request, "SubmitBatchRequest");
  if (undecodable !== undefined) return [undecodable];
  const problems = SUBMIT_TEXT_RULES.flatMap((rule) => textProblems(rule, request));
  if (request.items.length > BATCH_LIMITS.maxItems) return problems;
  request.items.forEach((item, i) => {
    if (item.request) problems.push(...shapeProblems(item.request).map((problem) => `items[${i}].${problem}`));
  });
  return problems;
}

/**
 * A SubmitBatchRequest checked whole: its own fields, and every item as Generate checks a request (the problems name
 * `items[i].field`); throws InvalidRequestError. `tenant` is the submitter's, as identified.
 */
export function validateBatch(request: Submit, tenant: string, ctx: ValidationContext): ValidBatch {
  const shape = batchShapeProblems(request);
  if (shape.length > 0) throw batchError(shape);
  const problems = numberProblems(SUBMIT_NUMBER_RULES, request, ctx);
  if (request.items.length === 0) problems.push("items: a batch needs at least one item");
  const seen = new Set<string>();
  const items = request.items.map((item, i) => {
    const at = `items[${i}]`;
    if (item.custom_id !== "") {
      if (seen.has(item.custom_id)) problems.push(`${at}.custom_id ${quoted(item.custom_id)} is not unique`);
      seen.add(item.custom_id);
    }
    if (!item.request) {
      problems.push(`${at}.request is unset`);
      return { customId: item.custom_id, request: {} as Request };
    }
    if (item.request.tenant_id !== "" && item.request.tenant_id !== tenant) {
      problems.push(`${at}.request.tenant_id must be empty or the batch's tenant`);
    }
    try {
      validateRequest(item.request, ctx, 0);
    } catch (error) {
      if (!(error instanceof InvalidRequestError)) throw error;
      problems.push(...error.problems.map((problem) => `${at}.request: ${problem}`));
    }
    return { customId: item.custom_id, request: { ...item.request, tenant_id: tenant } };
  });
  const completionWindowS = request.completion_window_s || BATCH_LIMITS.defaultCompletionWindowS;
  const retentionS = request.retention_s || BATCH_LIMITS.defaultRetentionS;
  if (retentionS < completionWindowS) {
    problems.push(`retention_s ${retentionS} is shorter than the completion window of ${completionWindowS} s`);
  }
  if (problems.length > 0) throw batchError(problems);
  return { items, completionWindowS, retentionS };
}

/** The calls that name a batch, or list them: GetBatch, GetBatchResults, CancelBatch, ListBatches. */
export interface BatchCall {
  readonly batch_id?: string;
  readonly tenant_id: string;
  readonly limit?: number;
}

const BATCH_CALL_TEXT_RULES: readonly TextRule<BatchCall>[] = [
  {
    field: "batch_id",
    values: (r) => (r.batch_id === undefined ? [] : [r.batch_id]),
    maxChars: MAX_LABEL_CHARS,
    nonEmpty: true,
  },
  { field: "tenant_id", values: (r) => [r.tenant_id], maxChars: MAX_LABEL_CHARS },
];

const BATCH_CALL_NUMBER_RULES: Readonly<Record<string, readonly NumberRule<BatchCall>[]>> = {
  GetBatchResultsRequest: [
    { field: "limit", value: (r) => r.limit || undefined, integer: true, min: 1, max: BATCH_LIMITS.maxResults },
  ],
  ListBatchesRequest: [
    { field: "limit", value: (r) => r.limit || undefined, integer: true, min: 1, max: BATCH_LIMITS.maxListed },
  ],
};

/** What is wrong with a batch call (`messageName`: its request message), all at once. */
export function batchCallProblems(call: BatchCall, messageName: string): string[] {
  const undecodable = undecodableProblem(call, messageName);
  if (undecodable !== undefined) return [undecodable];
  return [
    ...BATCH_CALL_TEXT_RULES.flatMap((rule) => textProblems(rule, call)),
    ...numberProblems(BATCH_CALL_NUMBER_RULES[messageName] ?? [], call, undefined),
  ];
}
