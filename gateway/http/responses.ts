/**
 * Response bodies as OpenAI's API shapes them: whole completions, and the chunks of a stream (each sent as one
 * server-sent event, `data: {chunk}`, the stream ending with `data: [DONE]`). Every completion, and the chunk that
 * carries a stream's finish_reason, has a `speculation` object beside OpenAI's fields: what speculation did for the
 * request, named to read beside SGLang's spec_accept_rate / spec_accept_length and vLLM's speculative metrics.
 */
import type { FinishReason__Output } from "../../gen/specgate/v1/FinishReason.ts";
import type { SpeculationStats__Output } from "../../gen/specgate/v1/SpeculationStats.ts";
import type { Delta } from "../generation.ts";
import type { Served } from "../requests.ts";

export type Endpoint = "completion" | "chat";

/** What every body of one response shares. */
export interface ResponseHead {
  readonly endpoint: Endpoint;
  readonly id: string;
  /** Unix seconds. */
  readonly created: number;
  readonly model: string;
}

export interface SpeculationSummary {
  /** Drafter used ("none": plain decoding). */
  readonly drafter: string;
  /** Verification rounds (one target forward each). */
  readonly rounds: number;
  /** Draft tokens proposed to the target. */
  readonly draft_tokens: number;
  /** Draft tokens the target accepted. */
  readonly accepted_tokens: number;
  /** accepted_tokens / draft_tokens (0 when nothing was drafted); SGLang's spec_accept_rate. */
  readonly accept_rate: number;
  /** Tokens per round: 1 + accepted_tokens / rounds (the target's own token counts); SGLang's spec_accept_length. */
  readonly accept_length: number;
}

export function speculationSummary(stats: SpeculationStats__Output): SpeculationSummary {
  return {
    drafter: stats.drafter,
    rounds: stats.rounds,
    draft_tokens: stats.draft_tokens,
    accepted_tokens: stats.accepted_tokens,
    accept_rate: stats.alpha,
    accept_length: stats.rounds === 0 ? 0 : 1 + stats.accepted_tokens / stats.rounds,
  };
}

/** OpenAI's finish reasons: the model's end-of-sequence token and stop strings are "stop", limits are "length". */
function finishReason(reason: FinishReason__Output): "stop" | "length" {
  return reason === "FINISH_REASON_EOS" || reason === "FINISH_REASON_STOP" ? "stop" : "length";
}

export function responseHead(endpoint: Endpoint, requestId: string, model: string): ResponseHead {
  return {
    endpoint,
    id: `${endpoint === "chat" ? "chatcmpl" : "cmpl"}-${requestId}`,
    created: Math.floor(Date.now() / 1000),
    model,
  };
}

function usageOf({ outcome }: Served) {
  const completion = outcome.tokenIds.length;
  return {
    prompt_tokens: outcome.promptTokens,
    completion_tokens: completion,
    total_tokens: outcome.promptTokens + completion,
  };
}

function base(head: ResponseHead, object: string) {
  return { id: head.id, object, created: head.created, model: head.model };
}

/** The whole completion (a request without `stream`); `tokenIds`: the choice lists the generated ids too. */
export function completionBody(head: ResponseHead, served: Served, tokenIds: boolean) {
  const { outcome } = served;
  const choice = {
    index: 0,
    ...(head.endpoint === "chat" ? { message: { role: "assistant", content: outcome.text } } : { text: outcome.text }),
    logprobs: null,
    ...(tokenIds && { token_ids: outcome.tokenIds }),
  };
  return {
    ...base(head, head.endpoint === "chat" ? "chat.completion" : "text_completion"),
    choices: [{ ...choice, finish_reason: finishReason(outcome.finishReason) }],
    usage: usageOf(served),
    speculation: speculationSummary(outcome.stats),
  };
}

/** The chunks of one stream, in order: `first` (chat only), `text` per round, `last`, `usage` when asked. */
export class ChunkWriter {
  constructor(
    private readonly head: ResponseHead,
    /** stream_options.include_usage: every chunk carries `usage` (null until the usage chunk). */
    private readonly includeUsage: boolean,
    /** Text chunks list their token ids too (return_token_ids). */
    private readonly tokenIds: boolean,
  ) {}

  #chunk(choice: Record<string, unknown> | undefined) {
    const object = this.head.endpoint === "chat" ? "chat.completion.chunk" : "text_completion";
    return {
      ...base(this.head, object),
      choices: choice === undefined ? [] : [{ index: 0, ...choice }],
      ...(this.includeUsage && { usage: null }),
    };
  }

  #content(text: string, finish: "stop" | "length" | null) {
    return this.head.endpoint === "chat"
      ? { delta: finish === null ? { content: text } : {}, logprobs: null, finish_reason: finish }
      : { text, logprobs: null, finish_reason: finish };
  }

  /** A chat stream opens with the assistant's role (OpenAI sends it alone, with empty content). */
  first() {
    return this.head.endpoint === "chat"
      ? this.#chunk({ delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null })
      : undefined;
  }

  /** A round's new tokens. */
  text(delta: Delta) {
    return this.#chunk({
      ...this.#content(delta.text, null),
      ...(this.tokenIds && { token_ids: delta.token_ids }),
    });
  }

  /** The chunk with the finish reason and the speculation statistics. */
  last(served: Served) {
    return {
      ...this.#chunk(this.#content("", finishReason(served.outcome.finishReason))),
      speculation: speculationSummary(served.outcome.stats),
    };
  }

  /** The usage chunk (no choices), when the request asked for it. */
  usage(served: Served) {
    return this.includeUsage ? { ...this.#chunk(undefined), usage: usageOf(served) } : undefined;
  }
}
