/**
 * What the replica's KV caches hold, token for token, on top of the runtime's caches: which tokens each sequence's cache
 * was built from and their prefix hash (so a job whose history the cache does not extend is re-prefilled instead of
 * being verified against another history, and a job naming a held prefix is checked against it), the order sequences
 * were last used in (LRU eviction under the byte cap), and release.
 *
 * Caches are soft state: dropping one only costs a re-prefill from the history the next job carries (after a
 * history_needed answer when that job named a held prefix).
 */
import { ByteCappedLru } from "../caching/byte-capped-lru.ts";
import { EMPTY_PREFIX, extendPrefix, type PrefixHash, samePrefix } from "../replica-link/held-prefix.ts";
import type { CausalLM } from "../runtime/causal-lm.ts";

interface Cached {
  /** Grown in place by rounds that append to it. */
  readonly tokens: number[];
  /** Hash of all of `tokens`. */
  readonly prefix: PrefixHash;
}

export class SequenceCache {
  /** Tokens each cached sequence holds, least recently used first. */
  readonly #tokens: ByteCappedLru<string, Cached>;
  readonly #onRelease: ((sequenceId: string) => void)[] = [];

  constructor(
    readonly model: CausalLM,
    readonly maxBytes: number,
  ) {
    this.#tokens = new ByteCappedLru({
      capacityBytes: maxBytes,
      usedBytes: () => model.cacheBytes(),
      bytesOf: (sequenceId) => model.cacheBytes(sequenceId),
      evict: (sequenceId) => this.release([sequenceId]),
    });
  }

  /**
   * Keeps the longest cached prefix of `history`, at most `history.length - 1` tokens (the last history token is always
   * fed again: its logits row scores the first draft token), and returns how many tokens were kept.
   */
  prepare(sequenceId: string, history: readonly number[]): number {
    const cached = this.#tokens.get(sequenceId)?.tokens;
    if (cached === undefined) return 0;
    const limit = Math.min(cached.length, history.length - 1, this.model.sequenceLength(sequenceId));
    let kept = 0;
    while (kept < limit && cached[kept] === history[kept]) kept++;
    if (kept === 0) this.release([sequenceId]);
    else if (kept < this.model.sequenceLength(sequenceId)) this.model.truncate(sequenceId, kept);
    return kept;
  }

  /** Whether the sequence's cache holds exactly `prefix`, all of it and nothing more (a held-prefix job's condition). */
  holds(sequenceId: string, prefix: PrefixHash): boolean {
    const cached = this.#tokens.get(sequenceId);
    return (
      cached !== undefined &&
      samePrefix(cached.prefix, prefix) &&
      this.model.sequenceLength(sequenceId) === prefix.length
    );
  }

  /**
   * Makes room for `bytes` more bytes of cache by evicting sequences least recently used first, never one in `busy`.
   * Returns the sequences evicted; the caller's forward fails on the runtime's cap when even that was not enough.
   */
  makeRoom(bytes: number, busy: ReadonlySet<string>): string[] {
    return this.#tokens.makeRoom(bytes, (sequenceId) => busy.has(sequenceId));
  }

  /**
   * Records that the sequence's cache now holds its first `offset` recorded tokens followed by `tokens` (most recently
   * used). Only these tokens are hashed: with `offset` > 0 (a held-prefix job) the record is extended in place.
   */
  commit(sequenceId: string, offset: number, tokens: readonly number[]): void {
    const base: Cached | undefined = offset === 0 ? { tokens: [], prefix: EMPTY_PREFIX } : this.#tokens.get(sequenceId);
    this.#tokens.delete(sequenceId);
    // A release that raced with the forward left the runtime without the cache (or without the record it extends):
    // then nothing is cached.
    if (base?.tokens.length !== offset || this.model.sequenceLength(sequenceId) !== offset + tokens.length) {
      this.model.release(sequenceId);
      return;
    }
    for (const token of tokens) base.tokens.push(token);
    this.#tokens.set(sequenceId, { tokens: base.tokens, prefix: extendPrefix(base.prefix, tokens) });
  }

  /** Frees the caches of the given sequences and returns how many of them held one. */
  release(sequenceIds: Iterable<string>): number {
    let released = 0;
    for (const sequenceId of sequenceIds) {
      if (this.#tokens.delete(sequenceId)) released++;
      this.model.release(sequenceId);
      for (const listener of this.#onRelease) listener(sequenceId);
    }
    return released;
  }

  /** Calls `listener` with each sequence released or evicted (what is kept beside a cache goes with it). */
  onRelease(listener: (sequenceId: string) => void): void {
    this.#onRelease.push(listener);
  }

  /** The tokens the sequence's cache was built from, or undefined when it holds none. */
  tokens(sequenceId: string): readonly number[] | undefined {
    return this.#tokens.get(sequenceId)?.tokens;
  }

  get sequences(): number {
    return this.#tokens.size;
  }

  get bytes(): number {
    return this.model.cacheBytes();
  }

  /** Sequences evicted for room since start. */
  get evictions(): number {
    return this.#tokens.evictions;
  }
}
