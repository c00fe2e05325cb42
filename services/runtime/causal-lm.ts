/**
 * The contract every model runtime offers to the speculation engine and the services: a causal language model that
 * keeps one KV cache per sequence and appends tokens to many sequences in one batched forward.
 */

export interface ModelInfo {
  /** Directory name under models/ (or the path it was loaded from). */
  readonly name: string;
  /** Width of every logits row. May exceed the tokenizer's vocabulary (padded models mask the extra ids off). */
  readonly vocabSize: number;
  /** Longest sequence (prompt + generated) the model accepts. */
  readonly contextLength: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  /** Bytes of KV cache one token occupies (all layers, keys and values). */
  readonly kvBytesPerToken: number;
}

export interface ForwardRequest {
  readonly sequenceId: string;
  /** Tokens appended after the sequence's cached ones (the first forward of a sequence is its prefill). */
  readonly tokens: readonly number[];
  /** Makes the tokens a tree rather than a chain; absent, each token sees every earlier one. */
  readonly tree?: TreeAttention;
}

/**
 * How the tokens of a forward see each other when they form a token tree (the root, then its descendants, parents
 * before children): engine/tree-attention.ts builds both fields. Any visibility in which each token sees itself and
 * only earlier tokens is accepted, not only trees: Lookahead decoding's two-dimensional mask is one
 * (engine/lookahead-layout.ts). The cached past stays visible to every token.
 */
export interface TreeAttention {
  /**
   * Row-major [n × n] for n tokens: 1 where token i may attend token j (its ancestors and itself), else 0. Only j ≤ i
   * may be 1 and the diagonal must be; a chain's mask is the lower triangle.
   */
  readonly mask: Uint8Array;
  /** Per token, its position after the cached ones: position = cached length + depth (a chain's are 0, 1, 2, …). */
  readonly depths: ArrayLike<number>;
}

export interface CausalLM {
  readonly info: ModelInfo;
  /**
   * Appends each request's tokens to its sequence's cache, all sequences in one batched run, and returns per request
   * the logits of every appended position, row-major [tokens.length × vocabSize] (an empty array for no tokens). The
   * arrays may be views into one buffer of the run; they are never overwritten. Forwards run in the order they were
   * called. Rejects without changing any cache on bad input (TypeError/RangeError), when a sequence would outgrow the
   * context (ContextLengthError), when the caches would exceed their cap (CacheCapacityError) or when a request is a
   * tree and the model scores chains only (UnsupportedModelError).
   */
  forward(batch: readonly ForwardRequest[]): Promise<Float32Array[]>;
  /** Tokens currently cached for the sequence (0 when unknown). */
  sequenceLength(sequenceId: string): number;
  /**
   * Drops cached positions from `length` on (rollback after rejected draft tokens); a no-op when `length` is not
   * shorter. Throws while a forward of the sequence is pending: truncate once it has resolved.
   */
  truncate(sequenceId: string, length: number): void;
  /**
   * Keeps the first `start` cached positions and, right after them in this order, the positions start + kept[j]
   * (ascending), dropping every other: the cache then holds start + kept.length positions. After a tree forward at
   * cached length `start`, `kept` lists the root's and the accepted path's slots (engine/tree-attention.ts
   * `compactionPlan`), and the cache equals a fresh prefill of the accepted tokens. Throws while a forward of the
   * sequence is pending, and on kept slots that are not ascending or not cached.
   */
  compact(sequenceId: string, start: number, kept: readonly number[]): void;
  /** Frees the sequence's cache; forwards of it still pending will not store one. Unknown ids are ignored. */
  release(sequenceId: string): void;
  /** Bytes of KV cache held by one sequence, or by all when no id is given. */
  cacheBytes(sequenceId?: string): number;
  close(): Promise<void>;
}

/** What a forward of a model with Medusa heads yields beyond logits, per appended position. */
export interface HeadOutputs {
  /** Row-major [tokens × heads × vocabSize]: head i's logits for the token i + 2 places after each position. */
  readonly medusaLogits: Float32Array;
  /** Row-major [tokens × hiddenSize]: the final normalised hidden states the heads read. */
  readonly hiddenStates: Float32Array;
}

/** A causal LM whose graph carries Medusa heads (services/model-builder/llama-graph.ts). */
export interface MedusaLM extends CausalLM {
  readonly medusa: { readonly heads: number; readonly hiddenSize: number };
  /**
   * The head outputs of the sequence's last forward, one row per token it appended (kept until the sequence's next
   * forward or release): in process, the drafter reads the next proposal off the verify forward that just ran.
   */
  lastHeadOutputs(sequenceId: string): HeadOutputs | undefined;
}

export function isMedusaLM(model: CausalLM): model is MedusaLM {
  const { medusa } = model as Partial<MedusaLM>;
  return medusa !== undefined && medusa.heads > 0;
}
