/**
 * The draft service's sequences: per sequence its drafter, sampling, committed history and outstanding proposal, with
 * the drafter's KV cache as soft state under one memory cap for the whole service.
 *
 * The table keeps every sequence's history itself, so a cache can be dropped at any time (least recently used first,
 * to make room for a proposal) and rebuilt from that history at the sequence's next proposal; draws depend only on
 * (seed, position), so a rebuilt sequence proposes what it would have proposed anyway. Operations on one sequence run
 * in the order they were issued; proposals of different sequences for the same drafter are batched into one drafter
 * call (one forward per draft step for all of them).
 */
import type { DraftErrorCode__Output } from "../../gen/specgate/v1/DraftErrorCode.ts";
import type { SeededSampling } from "../../proto/sampling-params.ts";
import type { SparseDistribution } from "../engine/sampling.ts";
import { CacheCapacityError, ContextLengthError } from "../runtime/runtime-errors.ts";
import type { ServedDrafter } from "./drafters.ts";
import { WaitingBatch } from "./waiting-batch.ts";

/** A per-sequence failure that crosses the wire as a DraftError with this code; the stream carries on. */
export class DraftFailure extends Error {
  override readonly name = "DraftFailure";
  constructor(
    readonly code: DraftErrorCode__Output,
    message: string,
  ) {
    super(message);
  }
}

export interface OpenArgs {
  readonly sequenceId: string;
  readonly drafter: string;
  /** Full history: prompt (BOS included) + everything generated so far. */
  readonly tokens: readonly number[];
  readonly sampling: SeededSampling;
}

export interface ProposeArgs {
  readonly sequenceId: string;
  readonly round: number;
  readonly k: number;
  /** History length the caller believes the draft holds. */
  readonly historyLength: number;
}

export interface AcceptArgs {
  readonly sequenceId: string;
  readonly round: number;
  readonly accepted: number;
  readonly appended: readonly number[];
}

export interface ProposalResult {
  /** Drafter that proposed. */
  readonly drafter: string;
  readonly tokens: number[];
  /** Sampling mode: the (quantised) q each token was drawn from. Empty when greedy. */
  readonly distributions: SparseDistribution[];
  /** Wall time of the drafter call this proposal was part of (including a rebuild of the cache). */
  readonly draftTimeMs: number;
  /** The drafter cache was (re)built from the history for this proposal. */
  readonly prefilled: boolean;
}

export interface SequenceCounters {
  /** Sequences open. */
  readonly sequences: number;
  /** Open sequences whose drafter holds a KV cache for them now. */
  readonly cachedSequences: number;
  readonly cacheBytes: number;
  readonly capacityBytes: number;
  readonly evictions: number;
  readonly proposals: number;
  readonly draftTokens: number;
  readonly prefills: number;
}

/** Where telemetry hooks in (services/telemetry records evictions; cache bytes are read from `cacheBytes()`). */
export interface SequenceEvents {
  evicted?(sequenceId: string, bytes: number): void;
}

export interface DraftSequencesOptions {
  /** Cap on the KV cache bytes of all drafters together. */
  readonly capacityBytes: number;
  readonly events?: SequenceEvents;
}

interface Sequence {
  readonly id: string;
  /** The session (gateway stream) that opened it: the sequence ends with that session. */
  readonly owner: string;
  readonly served: ServedDrafter;
  readonly sampling: SeededSampling;
  history: number[];
  proposal: { readonly round: number; readonly tokens: number[] } | undefined;
  /** The drafter has the sequence open (its cache may be partial; the drafter feeds what it lacks). */
  cached: boolean;
  /** A proposal is running: never evicted then. */
  busy: boolean;
}

interface ProposeItem {
  readonly sequence: Sequence;
  readonly k: number;
}

export class DraftSequences {
  /** Insertion order is recency: the first entry is the least recently used. */
  readonly #sequences = new Map<string, Sequence>();
  /** Per sequence, the settled tail of its operations (each operation starts after the previous one ended). */
  readonly #tails = new Map<string, Promise<void>>();
  readonly #batches = new Map<ServedDrafter, WaitingBatch<ProposeItem, ProposalResult>>();
  /** Bytes promised to proposals that are running but not yet in the drafters' caches. */
  #reservedBytes = 0;
  #evictions = 0;
  #proposals = 0;
  #draftTokens = 0;
  #prefills = 0;

  constructor(
    readonly drafters: ReadonlyMap<string, ServedDrafter>,
    private readonly options: DraftSequencesOptions,
  ) {
    for (const served of drafters.values()) {
      this.#batches.set(served, new WaitingBatch((items) => this.#proposeBatch(served, items)));
    }
  }

  /** Starts or restarts a sequence (replacing any previous state). The cache is built lazily, at the first proposal. */
  open(owner: string, args: OpenArgs): Promise<void> {
    return this.#serial(args.sequenceId, () => {
      const served = this.drafters.get(args.drafter);
      if (!served) {
        throw new DraftFailure(
          "DRAFT_ERROR_UNKNOWN_DRAFTER",
          `drafter "${args.drafter}" is not served here (served: ${[...this.drafters.keys()].join(", ")})`,
        );
      }
      if (args.tokens.length === 0) throw invalid("open.tokens must hold the history (at least BOS)");
      this.#forget(args.sequenceId);
      this.#sequences.set(args.sequenceId, {
        id: args.sequenceId,
        owner,
        served,
        sampling: args.sampling,
        history: [...args.tokens],
        proposal: undefined,
        cached: false,
        busy: false,
      });
    });
  }

  /** Proposes up to k tokens after the sequence's history (fewer near the drafter's context length, or none). */
  propose(args: ProposeArgs): Promise<ProposalResult> {
    return this.#serial(args.sequenceId, async () => {
      const sequence = this.#require(args.sequenceId);
      if (!(Number.isInteger(args.k) && args.k >= 1)) throw invalid(`propose.k must be >= 1, got ${args.k}`);
      if (args.historyLength !== sequence.history.length) {
        throw new DraftFailure(
          "DRAFT_ERROR_DESYNC",
          `history_length ${args.historyLength} differs from the ${sequence.history.length} tokens held for ` +
            `sequence ${sequence.id}: re-open it with the full history`,
        );
      }
      this.#touch(sequence);
      sequence.proposal = undefined;
      const k = Math.min(args.k, sequence.served.contextLength - sequence.history.length + 1);
      let result: ProposalResult = {
        drafter: sequence.served.spec.name,
        tokens: [],
        distributions: [],
        draftTimeMs: 0,
        prefilled: false,
      };
      if (k > 0) {
        const batch = this.#batches.get(sequence.served);
        if (!batch) throw new Error(`no batch for drafter ${sequence.served.spec.name}`);
        sequence.busy = true;
        try {
          result = await batch.submit({ sequence, k });
        } finally {
          sequence.busy = false;
        }
      }
      sequence.proposal = { round: args.round, tokens: result.tokens };
      this.#proposals++;
      this.#draftTokens += result.tokens.length;
      return result;
    });
  }

  /**
   * Settles a round: keeps the first `accepted` tokens of that round's proposal, then appends the target's tokens.
   * With accepted = 0 it also serves rounds the draft did not propose for (K = 0, or after a DraftError): the
   * appended tokens are simply added to the history.
   */
  accept(args: AcceptArgs): Promise<void> {
    return this.#serial(args.sequenceId, () => {
      const sequence = this.#require(args.sequenceId);
      const proposed = sequence.proposal?.round === args.round ? sequence.proposal.tokens : [];
      if (!(Number.isInteger(args.accepted) && args.accepted >= 0 && args.accepted <= proposed.length)) {
        throw invalid(
          `accept.accepted ${args.accepted} is outside 0..${proposed.length} ` +
            `(tokens proposed for sequence ${sequence.id} in round ${args.round})`,
        );
      }
      const kept = sequence.history.length + args.accepted;
      if (sequence.cached) sequence.served.drafter.commit(sequence.id, kept, args.appended);
      sequence.history = sequence.history.concat(proposed.slice(0, args.accepted), args.appended);
      sequence.proposal = undefined;
      this.#touch(sequence);
    });
  }

  /** Ends a sequence and frees its cache; resolves true when it was open. Unknown ids are ignored. */
  close(sequenceId: string): Promise<boolean> {
    return this.#serial(sequenceId, () => this.#forget(sequenceId));
  }

  /** Ends every sequence a session opened (its gateway stream ended: nobody will settle or close them). */
  async closeOwnedBy(owner: string): Promise<number> {
    const owned = [...this.#sequences.values()].filter((s) => s.owner === owner).map((s) => s.id);
    // Re-checked inside each close: the id may have been re-opened by another session meanwhile.
    const closed = await Promise.all(
      owned.map((id) => this.#serial(id, () => (this.#sequences.get(id)?.owner === owner ? this.#forget(id) : false))),
    );
    return closed.filter(Boolean).length;
  }

  /** KV cache bytes held by all drafters now. */
  cacheBytes(): number {
    let bytes = 0;
    for (const served of this.drafters.values()) bytes += served.drafter.cacheBytes();
    return bytes;
  }

  counters(): SequenceCounters {
    let cachedSequences = 0;
    for (const s of this.#sequences.values()) if (s.cached && s.served.kvBytesPerToken > 0) cachedSequences++;
    return {
      sequences: this.#sequences.size,
      cachedSequences,
      cacheBytes: this.cacheBytes(),
      capacityBytes: this.options.capacityBytes,
      evictions: this.#evictions,
      proposals: this.#proposals,
      draftTokens: this.#draftTokens,
      prefills: this.#prefills,
    };
  }

  /** Waits for every running operation (a draining server lets them finish before ending its streams). */
  async idle(): Promise<void> {
    while (this.#tails.size > 0) await Promise.all(this.#tails.values());
  }

  async #proposeBatch(served: ServedDrafter, items: ProposeItem[]): Promise<(ProposalResult | Error)[]> {
    const started = performance.now();
    const results: (ProposalResult | Error)[] = [];
    const admitted: { index: number; item: ProposeItem; prefilled: boolean }[] = [];
    let reserved = 0;
    for (const [index, item] of items.entries()) {
      const { sequence, k } = item;
      // After proposing, the cache holds the history and k − 1 draft tokens (the last one is never fed).
      const bytesAfter = (sequence.history.length + k - 1) * served.kvBytesPerToken;
      const need = Math.max(0, bytesAfter - (sequence.cached ? served.drafter.cacheBytes(sequence.id) : 0));
      if (!this.#makeRoom(need)) {
        results[index] = new DraftFailure(
          "DRAFT_ERROR_RESOURCE_EXHAUSTED",
          `sequence ${sequence.id} needs ${need} bytes of draft KV cache; the cap is ` +
            `${this.options.capacityBytes} bytes and the other caches in use cannot be evicted`,
        );
        continue;
      }
      this.#reservedBytes += need;
      reserved += need;
      try {
        if (!sequence.cached) {
          const { id, history, sampling } = sequence;
          await served.drafter.open({ sequenceId: id, history, sampling, seed: sampling.seed });
          sequence.cached = true;
          this.#prefills++;
          admitted.push({ index, item, prefilled: true });
        } else {
          admitted.push({ index, item, prefilled: false });
        }
      } catch (error) {
        // A failed open may have left part of a cache behind.
        served.drafter.close(sequence.id);
        results[index] = asDraftFailure(error);
      }
    }
    try {
      if (admitted.length > 0) {
        const drafts = await served.drafter.propose(
          admitted.map(({ item }) => ({ sequenceId: item.sequence.id, k: item.k })),
        );
        const draftTimeMs = performance.now() - started;
        admitted.forEach(({ index, prefilled }, j) => {
          results[index] = {
            drafter: served.spec.name,
            tokens: drafts[j].tokens,
            distributions: drafts[j].distributions ?? [],
            draftTimeMs,
            prefilled,
          };
        });
      }
    } catch (error) {
      // After a failed drafter call its state for these sequences is unknown: drop their caches so that their next
      // proposal rebuilds them from the history.
      for (const { index, item } of admitted) {
        this.#dropCache(item.sequence);
        results[index] = asDraftFailure(error);
      }
    } finally {
      this.#reservedBytes -= reserved;
    }
    return results;
  }

  /** Evicts least recently used idle caches until `need` more bytes fit under the cap; false when they cannot. */
  #makeRoom(need: number): boolean {
    const fits = () => this.cacheBytes() + this.#reservedBytes + need <= this.options.capacityBytes;
    if (fits()) return true;
    for (const sequence of this.#sequences.values()) {
      if (sequence.busy || !sequence.cached) continue;
      const bytes = sequence.served.drafter.cacheBytes(sequence.id);
      if (bytes === 0) continue;
      this.#dropCache(sequence);
      this.#evictions++;
      this.options.events?.evicted?.(sequence.id, bytes);
      if (fits()) return true;
    }
    return false;
  }

  /** Closes the sequence in its drafter (freeing its cache); the table keeps the history to rebuild it. */
  #dropCache(sequence: Sequence): void {
    if (!sequence.cached) return;
    sequence.served.drafter.close(sequence.id);
    sequence.cached = false;
  }

  #forget(sequenceId: string): boolean {
    const sequence = this.#sequences.get(sequenceId);
    if (!sequence) return false;
    this.#dropCache(sequence);
    this.#sequences.delete(sequenceId);
    return true;
  }

  #require(sequenceId: string): Sequence {
    const sequence = this.#sequences.get(sequenceId);
    if (!sequence) {
      throw new DraftFailure(
        "DRAFT_ERROR_UNKNOWN_SEQUENCE",
        `sequence ${sequenceId} is not open here: re-open it with the full history`,
      );
    }
    return sequence;
  }

  #touch(sequence: Sequence): void {
    this.#sequences.delete(sequence.id);
    this.#sequences.set(sequence.id, sequence);
  }

  #serial<T>(sequenceId: string, operation: () => T | Promise<T>): Promise<T> {
    const result = (this.#tails.get(sequenceId) ?? Promise.resolve()).then(operation);
    const tail = result.then(
      () => {},
      () => {},
    );
    this.#tails.set(sequenceId, tail);
    void tail.then(() => {
      if (this.#tails.get(sequenceId) === tail) this.#tails.delete(sequenceId);
    });
    return result;
  }
}

function invalid(message: string): DraftFailure {
  return new DraftFailure("DRAFT_ERROR_INVALID_ARGUMENT", message);
}

/** Any error as the DraftFailure it crosses the wire as (runtime limits get their own codes). */
export function asDraftFailure(error: unknown): DraftFailure {
  if (error instanceof DraftFailure) return error;
  if (error instanceof CacheCapacityError) return new DraftFailure("DRAFT_ERROR_RESOURCE_EXHAUSTED", error.message);
  if (error instanceof ContextLengthError) return new DraftFailure("DRAFT_ERROR_INVALID_ARGUMENT", error.message);
  return new DraftFailure("DRAFT_ERROR_INTERNAL", error instanceof Error ? error.message : String(error));
}
