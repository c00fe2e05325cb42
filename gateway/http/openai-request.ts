/**
 * OpenAI request bodies → the gateway's GenerateRequest. This module checks what only the HTTP API has (JSON types,
 * OpenAI's fields, the `speculation` extension) and refuses clearly what it does not serve (n > 1, logprobs, echo,
 * penalties, ...); limits and ranges are then checked by the same validation as gRPC requests (validation.ts).
 * Fields set to null count as absent, as in OpenAI's API. Unknown fields are refused rather than ignored, so that a
 * client never believes a setting took effect when it did not.
 */
import type { GenerateRequest__Output } from "../../gen/specgate/v1/GenerateRequest.ts";
import type { SpeculationSettings__Output } from "../../gen/specgate/v1/SpeculationSettings.ts";
import { HttpError, invalidField } from "./errors.ts";

/** One chat message with its content as text (parts of type "text" joined). */
export interface ChatMessage {
  readonly role: string;
  readonly content: string;
  /** The participant's name, for templates that use it. */
  readonly name?: string;
}

export interface ResponseOptions {
  readonly stream: boolean;
  /** stream_options.include_usage: a last chunk carries the usage. */
  readonly includeUsage: boolean;
  /** The `return_token_ids` extension (as vLLM's): choices carry the generated token ids beside the text. */
  readonly returnTokenIds: boolean;
}

export interface CompletionRequest extends ResponseOptions {
  readonly generate: GenerateRequest__Output;
}

export interface ChatRequest extends ResponseOptions {
  readonly messages: ChatMessage[];
  /** The request without its prompt, which the chat template makes from `messages`. */
  readonly generate: Omit<GenerateRequest__Output, "prompt" | "text" | "token_ids">;
}

/** Fields both endpoints read the same way. */
const SHARED_FIELDS = [
  "model",
  "max_tokens",
  "temperature",
  "top_p",
  "top_k",
  "seed",
  "stop",
  "stream",
  "stream_options",
  "n",
  "user",
  "speculation",
  "return_token_ids",
  "logprobs",
  "presence_penalty",
  "frequency_penalty",
  "logit_bias",
];
const COMPLETION_FIELDS = new Set([...SHARED_FIELDS, "prompt", "echo", "best_of", "suffix"]);
const CHAT_FIELDS = new Set([...SHARED_FIELDS, "messages", "max_completion_tokens", "top_logprobs"]);
const CHAT_ROLES = new Set(["system", "developer", "user", "assistant"]);

type Body = Readonly<Record<string, unknown>>;

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "string" ? `the string ${JSON.stringify(value)}` : `${typeof value} ${JSON.stringify(value)}`;
}

/** The body's field, undefined when absent or null. */
function field(body: Body, name: string): unknown {
  const value = body[name];
  return value === null ? undefined : value;
}

/** `parent`: where `body` sits in the request (`speculation.tree`), for the error's param; "" for the top level. */
function optionalNumber(body: Body, name: string, integer = false, parent = ""): number | undefined {
  const value = field(body, name);
  if (value === undefined) return undefined;
  if (typeof value !== "number" || (integer && !Number.isInteger(value))) {
    const param = parent === "" ? name : `${parent}.${name}`;
    throw invalidField(param, `${param} must be ${integer ? "an integer" : "a number"}, got ${describe(value)}`);
  }
  return value;
}

function optionalBoolean(body: Body, name: string, parent = ""): boolean | undefined {
  const value = field(body, name);
  if (value !== undefined && typeof value !== "boolean") {
    const param = parent === "" ? name : `${parent}.${name}`;
    throw invalidField(param, `${param} must be true or false, got ${describe(value)}`);
  }
  return value;
}

function optionalString(body: Body, name: string): string | undefined {
  const value = field(body, name);
  if (value !== undefined && typeof value !== "string") {
    throw invalidField(name, `${name} must be a string, got ${describe(value)}`);
  }
  return value;
}

/** Refuses a field unless it is absent or holds the value that means "off" (`off` or, given, a test). */
function onlyOff(body: Body, name: string, off: unknown, why: string, isOff = (value: unknown) => value === off): void {
  const value = field(body, name);
  if (value === undefined || isOff(value)) return;
  throw invalidField(name, `${name} = ${JSON.stringify(value)} is not supported: ${why}`);
}

const isEmptyObject = (value: unknown) =>
  typeof value === "object" && value !== null && !Array.isArray(value) && Object.keys(value).length === 0;

function checkFields(body: unknown, known: ReadonlySet<string>, endpoint: string): Body {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HttpError(400, "invalid_request_error", "the request body must be a JSON object", "invalid_json");
  }
  for (const name of Object.keys(body)) {
    if (!known.has(name)) {
      throw invalidField(name, `unknown field "${name}": ${endpoint} does not support it on this server`);
    }
  }
  return body as Body;
}

function stopOf(body: Body): string[] {
  const value = field(body, "stop");
  if (value === undefined) return [];
  if (typeof value === "string") return [value];
  if (Array.isArray(value) && value.every((s) => typeof s === "string")) return value;
  throw invalidField("stop", `stop must be a string or an array of strings, got ${describe(value)}`);
}

const SPECULATION_FIELDS = ["drafter", "k", "tree", "lookahead"];
const TREE_FIELDS = ["width", "nodes", "adaptive"];
const LOOKAHEAD_FIELDS = ["window", "ngram", "candidates"];

/** Refuses any field of the object at `param` but `known`. */
function onlyKnown(object: Body, param: string, known: readonly string[]): void {
  for (const name of Object.keys(object)) {
    if (!known.includes(name)) {
      throw invalidField(`${param}.${name}`, `unknown field "${param}.${name}" (known: ${known.join(", ")})`);
    }
  }
}

function streamOptionsOf(body: Body, stream: boolean): boolean {
  const value = field(body, "stream_options");
  if (value === undefined) return false;
  if (!stream) throw invalidField("stream_options", "stream_options is only allowed when stream is true");
  if (typeof value !== "object" || Array.isArray(value)) {
    throw invalidField("stream_options", `stream_options must be an object, got ${describe(value)}`);
  }
  const options = value as Body;
  onlyKnown(options, "stream_options", ["include_usage"]);
  return optionalBoolean(options, "include_usage") ?? false;
}

/**
 * `speculation.tree`: `{"width": W, "nodes": N, "adaptive": bool}`, gRPC's TreeSpeculation with its shape flattened.
 * Absent width or nodes read as 0, which the gateway's validation refuses with its ranges, as it does over gRPC.
 */
function treeOf(spec: Body): SpeculationSettings__Output["tree"] {
  const value = field(spec, "tree");
  if (value === undefined) return null;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw invalidField("speculation.tree", `speculation.tree must be an object such as {"width": 2, "nodes": 6}`);
  }
  const tree = value as Body;
  onlyKnown(tree, "speculation.tree", TREE_FIELDS);
  const size = (name: string) => optionalNumber(tree, name, false, "speculation.tree") ?? 0;
  return {
    shape: { width: size("width"), nodes: size("nodes") },
    adaptive: optionalBoolean(tree, "adaptive", "speculation.tree") ?? false,
  };
}

/**
 * `speculation.lookahead`: `{"window": W, "ngram": N, "candidates": G}`, gRPC's LookaheadSettings; absent fields read
 * as 0, the replicas' defaults.
 */
function lookaheadOf(spec: Body): SpeculationSettings__Output["lookahead"] {
  const value = field(spec, "lookahead");
  if (value === undefined) return null;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw invalidField("speculation.lookahead", `speculation.lookahead must be an object such as {"window": 4}`);
  }
  const lookahead = value as Body;
  onlyKnown(lookahead, "speculation.lookahead", LOOKAHEAD_FIELDS);
  const size = (name: string) => optionalNumber(lookahead, name, false, "speculation.lookahead") ?? 0;
  return { window: size("window"), ngram: size("ngram"), candidates: size("candidates") };
}

/** The `speculation` extension: `{"drafter": NAME, "k": N | "adaptive", "tree": {...}, "lookahead": {...}}`, all optional. */
function speculationOf(body: Body): SpeculationSettings__Output | null {
  const value = field(body, "speculation");
  if (value === undefined) return null;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw invalidField("speculation", `speculation must be an object such as {"drafter": "int4", "k": 4}`);
  }
  const spec = value as Body;
  onlyKnown(spec, "speculation", SPECULATION_FIELDS);
  const drafter = optionalString(spec, "drafter") ?? "";
  const k = field(spec, "k");
  const settings = {
    drafter,
    acceptance: "ACCEPTANCE_MODE_UNSPECIFIED",
    relaxed: null,
    tree: treeOf(spec),
    lookahead: lookaheadOf(spec),
  } as const;
  if (k === undefined) return settings;
  if (k === "adaptive") return { ...settings, length: "adaptive", adaptive: { min_k: 0, max_k: 0 } };
  if (typeof k !== "number" || !Number.isInteger(k) || k < 0) {
    throw invalidField("speculation.k", `speculation.k must be an integer >= 0 or "adaptive", got ${describe(k)}`);
  }
  return { ...settings, length: "fixed_k", fixed_k: k };
}

/** What both endpoints take alike, and the request without its prompt. */
function sharedOf(body: Body, chat: boolean) {
  onlyOff(body, "n", 1, "this server generates one choice per request (n = 1)");
  onlyOff(body, "presence_penalty", 0, "this server does not apply penalties");
  onlyOff(body, "frequency_penalty", 0, "this server does not apply penalties");
  onlyOff(body, "logit_bias", {}, "this server does not apply logit biases", isEmptyObject);
  const stream = optionalBoolean(body, "stream") ?? false;
  const temperature = optionalNumber(body, "temperature");
  const topP = optionalNumber(body, "top_p");
  const seed = optionalNumber(body, "seed", true);
  const maxTokens = chat
    ? (optionalNumber(body, "max_completion_tokens", true) ?? optionalNumber(body, "max_tokens", true))
    : optionalNumber(body, "max_tokens", true);
  const generate = {
    ...(maxTokens !== undefined && { max_tokens: maxTokens }),
    sampling: {
      temperature: temperature ?? 0,
      top_k: optionalNumber(body, "top_k", true) ?? 0,
      ...(topP !== undefined && { top_p: topP }),
      ...(seed !== undefined && { seed }),
    },
    stop: stopOf(body),
    speculation: speculationOf(body),
    tenant_id: "",
    user_id: optionalString(body, "user") ?? "",
    model: optionalString(body, "model") ?? "",
    request_id: "",
  };
  return {
    generate,
    stream,
    includeUsage: streamOptionsOf(body, stream),
    returnTokenIds: optionalBoolean(body, "return_token_ids") ?? false,
  };
}

/** POST /v1/completions. */
export function completionRequest(raw: unknown): CompletionRequest {
  const body = checkFields(raw, COMPLETION_FIELDS, "/v1/completions");
  onlyOff(body, "logprobs", false, "this server does not return log-probabilities");
  onlyOff(body, "echo", false, "this server does not echo the prompt");
  onlyOff(body, "best_of", 1, "this server generates one choice per request");
  onlyOff(body, "suffix", "", "this server does not insert text");
  const { generate, ...options } = sharedOf(body, false);
  const prompt = field(body, "prompt");
  if (typeof prompt === "string") return { ...options, generate: { ...generate, prompt: "text", text: prompt } };
  if (Array.isArray(prompt) && prompt.every((id) => typeof id === "number")) {
    return { ...options, generate: { ...generate, prompt: "token_ids", token_ids: { ids: prompt } } };
  }
  throw invalidField(
    "prompt",
    prompt === undefined
      ? "prompt is required: a string, or an array of token ids"
      : `prompt must be a string or an array of token ids (one prompt per request), got ${describe(prompt)}`,
  );
}

function messageOf(value: unknown, index: number): ChatMessage {
  const param = `messages[${index}]`;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalidField(param, `${param} must be an object with role and content`);
  }
  const { role, content, name, ...rest } = value as Body;
  const extra = Object.keys(rest)[0];
  if (extra !== undefined) throw invalidField(`${param}.${extra}`, `${param}.${extra} is not supported (tool calls)`);
  if (typeof role !== "string" || !CHAT_ROLES.has(role)) {
    throw invalidField(
      `${param}.role`,
      `${param}.role must be one of ${[...CHAT_ROLES].join(", ")}, got ${describe(role)}`,
    );
  }
  if (name !== undefined && name !== null && typeof name !== "string") {
    throw invalidField(`${param}.name`, `${param}.name must be a string`);
  }
  const named = typeof name === "string" ? { name } : {};
  if (typeof content === "string") return { role, content, ...named };
  if (Array.isArray(content)) {
    const texts = content.map((part, p) => {
      const text = (part as Body | null)?.text;
      if ((part as Body | null)?.type !== "text" || typeof text !== "string") {
        throw invalidField(`${param}.content[${p}]`, `${param}.content[${p}] must be {"type": "text", "text": ...}`);
      }
      return text;
    });
    return { role, content: texts.join(""), ...named };
  }
  throw invalidField(`${param}.content`, `${param}.content must be a string or an array of text parts`);
}

/** POST /v1/chat/completions. */
export function chatRequest(raw: unknown): ChatRequest {
  const body = checkFields(raw, CHAT_FIELDS, "/v1/chat/completions");
  onlyOff(body, "logprobs", false, "this server does not return log-probabilities");
  onlyOff(body, "top_logprobs", 0, "this server does not return log-probabilities");
  const messages = field(body, "messages");
  if (!Array.isArray(messages) || messages.length === 0) {
    throw invalidField("messages", "messages must be a non-empty array of {role, content}");
  }
  return { ...sharedOf(body, true), messages: messages.map(messageOf) };
}
