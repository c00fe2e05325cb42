/**
 * The draft service's sequences: per sequence its drafter, sampling, committed history and outstanding proposal, with
 * the drafter's KV cache as soft state under one memory cap for the whole service.
 *
 * The table keeps every sequence's history itself, so a cache can be dropped at any time (least recently used first,
 * to make room for a proposal) and rebuilt from that history at the sequence's next proposal; draws depend only on
 * (seed, position), so a rebuilt sequence proposes what it would have proposed anyway. Operations on one sequence run
 * in the order they were issued; proposals of different sequences for the same drafter are batched into one drafter
 * call (one forward per draft step for all of them).
 *
 * A round is settled either by the gateway's Accept or by the target's DraftVerdict, whichever comes first
 * (draft.proto, "Drafting on the verdict"); a verdict that settles the round also drafts the next one when the round's
 * Propose asked for it, and the gateway's Accept and Propose that follow for those rounds are then answered by what
 * was done.
 */
import type { DraftErrorCode__Output } from "../../gen/specgate/v1/DraftErrorCode.ts";
import type { SeededSampling } from "../../proto/sampling-params.ts";
import { Batcher } from "../batching/batcher.ts";
import { ByteCappedLru } from "../caching/byte-capped-lru.ts";
import type { SparseDistribution } from "../engine/sampling.ts";
import { CacheCapacityError, ContextLengthError } from "../runtime/runtime-errors.ts";
import type { ServedDrafter } from "./drafters.ts";

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
  /** Tokens to draft for round + 1 when this round's verdict arrives (0: none). */
  readonly kNext?: number;
  /** Trace context of the asking round, kept for a draft on its verdict (which belongs to that round's trace). */
  readonly traceContext?: Readonly<Record<string, string>>;
}

/** The target's verdict on a round (DraftVerdict). */
export interface VerdictArgs {
  readonly sequenceId: string;
  readonly round: number;
  readonly accepted: number;
  readonly nextToken: number;
}

/** A proposal drafted on a verdict: for round `round`, of the sequence's owner. */
export interface VerdictProposal {
  readonly owner: string;
  readonly round: number;
  readonly k: number;
  readonly result: ProposalResult | DraftFailure;
  /** performance.now() when the verdict was taken up. */
  readonly started: number;
  /** ProposeArgs.traceContext of the settled round. */
  readonly traceContext: Readonly<Record<string, string>>;
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
  readonly verdictProposals: number;
  readonly verdicts: number;
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
  /** K to draft on the verdict of the round proposed last (ProposeRequest.k_next), and that round's trace context. */
  kNext: number;
  traceContext: Readonly<Record<string, string>>;
  /**
   * Last round a verdict settled, and last round drafted on a verdict: the gateway's Accepts and Proposes up to them,
   * which may still be on their way (it saw the verdicts later), are already done.
   */
  verdictRound: number;
  verdictDraftRound: number;
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
  /** Every open sequence, least recently used first; their drafters' caches share the cap. */
  readonly #sequences: ByteCappedLru<string, Sequence>;
  /** Per sequence, the settled tail of its operations (each operation starts after the previous one ended). */
  readonly #tails = new Map<string, Promise<void>>();
  readonly #batches = new Map<ServedDrafter, Batcher<ProposeItem, ProposalResult>>();
  /** Bytes promised to proposals that are running but not yet in the drafters' caches. */
  #reservedBytes = 0;
  #proposals = 0;
  #draftTokens = 0;
  #prefills = 0;
  #verdictProposals = 0;
  #verdicts = 0;

  constructor(
    readonly drafters: ReadonlyMap<string, ServedDrafter>,
    private readonly options: DraftSequencesOptions,
  ) {
    this.#sequences = new ByteCappedLru({
      capacityBytes: options.capacityBytes,
      usedBytes: () => this.cacheBytes() + this.#reservedBytes,
      bytesOf: (_, sequence) => (sequence.cached ? sequence.served.drafter.cacheBytes(sequence.id) : 0),
      // The table keeps the sequence and its history: the cache is rebuilt at its next proposal.
      evict: (_, sequence, bytes) => {
        this.#dropCache(sequence);
        this.options.events?.evicted?.(sequence.id, bytes);
      },
    });
    for (const served of drafters.values()) {
      // A proposal starts its drafter call at once when the drafter is idle; the ones that arrive meanwhile share the
      // next call.
      const batcher = new Batcher<ProposeItem, ProposalResult>({
        shareTurn: false,
        key: (item) => item.sequence.id,
        run: (items) => this.#proposeBatch(served, items),
      });
      this.#batches.set(served, batcher);
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
        kNext: 0,
        traceContext: {},
        verdictRound: 0,
        verdictDraftRound: 0,
        cached: false,
        busy: false,
      });
    });
  }

  /**
   * Proposes up to k tokens after the sequence's history (fewer near the drafter's context length, or none).
   * Undefined when this round (or a later one) was already drafted on a verdict (that Proposal went out then).
   */
  propose(args: ProposeArgs): Promise<ProposalResult | undefined> {
    return this.#serial(args.sequenceId, async () => {
      const sequence = this.#require(args.sequenceId);
      checkRound(args.round, "propose");
      // Also from a Propose answered by a draft on the verdict: the latest word on the round after.
      sequence.kNext = args.kNext ?? 0;
      sequence.traceContext = args.traceContext ?? {};
      if (args.round <= sequence.verdictDraftRound) return undefined;
      if (!(Number.isInteger(args.k) && args.k >= 1)) throw invalid(`propose.k must be >= 1, got ${args.k}`);
      if (args.historyLength !== sequence.history.length) {
        throw new DraftFailure(
          "DRAFT_ERROR_DESYNC",
          `history_length ${args.historyLength} differs from the ${sequence.history.length} tokens held for ` +
            `sequence ${sequence.id}: re-open it with the full history`,
        );
      }
      return this.#draft(sequence, args.round, args.k);
    });
  }

  /**
   * Settles a round: keeps the first `accepted` tokens of that round's proposal, then appends the target's tokens.
   * With accepted = 0 it also serves rounds the draft did not propose for (K = 0, or after a DraftError): the
   * appended tokens are simply added to the history. A round a verdict already settled is left as it is.
   */
  accept(args: AcceptArgs): Promise<void> {
    return this.#serial(args.sequenceId, () => {
      const sequence = this.#require(args.sequenceId);
      checkRound(args.round, "accept");
      if (args.round <= sequence.verdictRound) return;
      this.#settle(sequence, args.round, args.accepted, args.appended);
    });
  }

  /**
   * Settles a round on the target's verdict, unless the gateway's Accept came first, and then drafts the next round
   * when its Propose asked for that. Undefined when there is nothing to send; a failed draft is left to the gateway's
   * Propose, which follows and drafts again.
   */
  settleOnVerdict(args: VerdictArgs): Promise<VerdictProposal | undefined> {
    return this.#serial(args.sequenceId, async () => {
      const sequence = this.#sequences.get(args.sequenceId);
      if (sequence?.proposal === undefined || sequence.proposal.round !== args.round) return undefined;
      const started = performance.now();
      this.#settle(sequence, args.round, args.accepted, [args.nextToken]);
      sequence.verdictRound = args.round;
      this.#verdicts++;
      const { kNext: k, owner, traceContext } = sequence;
      if (k === 0) return undefined;
      const round = args.round + 1;
      try {
        const result = await this.#draft(sequence, round, k);
        sequence.verdictDraftRound = round;
        this.#verdictProposals++;
        return { owner, round, k, result, started, traceContext };
      } catch (error) {
        return { owner, round, k, result: asDraftFailure(error), started, traceContext };
      }
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
      evictions: this.#sequences.evictions,
      proposals: this.#proposals,
      draftTokens: this.#draftTokens,
      prefills: this.#prefills,
      verdictProposals: this.#verdictProposals,
      verdicts: this.#verdicts,
    };
  }

  /** Waits for every running operation (a draining server lets them finish before ending its streams). */
  async idle(): Promise<void> {
    while (this.#tails.size > 0) await Promise.all(this.#tails.values());
  }

  async #draft(sequence: Sequence, round: number, asked: number): Promise<ProposalResult> {
    this.#touch(sequence);
    sequence.proposal = undefined;
    const k = Math.min(asked, sequence.served.contextLength - sequence.history.length + 1);
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
    sequence.proposal = { round, tokens: result.tokens };
    this.#proposals++;
    this.#draftTokens += result.tokens.length;
    return result;
  }

  #settle(sequence: Sequence, round: number, accepted: number, appended: readonly number[]): void {
    const proposed = sequence.proposal?.round === round ? sequence.proposal.tokens : [];
    if (!(Number.isInteger(accepted) && accepted >= 0 && accepted <= proposed.length)) {
      throw invalid(
        `accept.accepted ${accepted} is outside 0..${proposed.length} ` +
          `(tokens proposed for sequence ${sequence.id} in round ${round})`,
      );
    }
    const kept = sequence.history.length + accepted;
    if (sequence.cached) sequence.served.drafter.commit(sequence.id, kept, appended);
    sequence.history = sequence.history.concat(proposed.slice(0, accepted), appended);
    sequence.proposal = undefined;
    this.#touch(sequence);
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
    this.#sequences.makeRoom(need, (_, sequence) => sequence.busy);
    return this.#sequences.fits(need);
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

/** Rounds count from 1: round 0 would pass for a round already settled or drafted on a verdict. */
function checkRound(round: number, message: string): void {
  if (!(Number.isInteger(round) && round >= 1)) throw invalid(`${message}.round must be >= 1, got ${round}`);
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
