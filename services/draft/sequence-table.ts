/**
 * The draft service's open sequences, least recently used first, with each one's drafter KV cache as soft state under
 * one memory cap for the whole service.
 *
 * The table keeps every sequence's history itself, so a cache can be dropped at any time (least recently used first,
 * to make room for a proposal) and rebuilt from that history at the sequence's next proposal; draws depend only on
 * (seed, position), so a rebuilt sequence proposes what it would have proposed anyway.
 */
import type { SeededSampling } from "../../proto/sampling-params.ts";
import { ByteCappedLru } from "../caching/byte-capped-lru.ts";
import { isTreeDrafter } from "../engine/drafter.ts";
import type { ServedDrafter } from "./drafters.ts";

/** What the table needs of a sequence. */
export interface TableSequence {
  readonly id: string;
  readonly served: ServedDrafter;
  readonly sampling: SeededSampling;
  /** Committed history: prompt (BOS included) + everything generated so far; what a dropped cache is rebuilt from. */
  readonly history: readonly number[];
  /** The drafter has the sequence open (its cache may be partial; the drafter feeds what it lacks). */
  cached: boolean;
  /** A proposal is running: never evicted then. */
  busy: boolean;
}

/** Where telemetry hooks in (services/telemetry records evictions; cache bytes are read from `cacheBytes()`). */
export interface SequenceEvents {
  evicted?(sequenceId: string, bytes: number): void;
}

export interface SequenceTableOptions {
  /** Cap on the KV cache bytes of all drafters together. */
  readonly capacityBytes: number;
  readonly events?: SequenceEvents;
}

export interface TableCounters {
  /** Sequences open. */
  readonly sequences: number;
  /** Open sequences whose drafter holds a KV cache for them now. */
  readonly cachedSequences: number;
  readonly cacheBytes: number;
  readonly capacityBytes: number;
  readonly evictions: number;
  /** Caches (re)built from a history. */
  readonly prefills: number;
}

export class SequenceTable<S extends TableSequence> {
  readonly #sequences: ByteCappedLru<string, S>;
  /** Bytes promised to proposals that are running but not yet in the drafters' caches. */
  #reservedBytes = 0;
  #prefills = 0;

  constructor(
    readonly drafters: ReadonlyMap<string, ServedDrafter>,
    readonly options: SequenceTableOptions,
  ) {
    this.#sequences = new ByteCappedLru({
      capacityBytes: options.capacityBytes,
      usedBytes: () => this.cacheBytes() + this.#reservedBytes,
      bytesOf: (_, sequence) => this.cachedBytes(sequence),
      // The table keeps the sequence and its history: the cache is rebuilt at its next proposal.
      evict: (_, sequence, bytes) => {
        this.dropCache(sequence);
        options.events?.evicted?.(sequence.id, bytes);
      },
    });
  }

  get(sequenceId: string): S | undefined {
    return this.#sequences.get(sequenceId);
  }

  /** Puts the sequence in the table as its most recently used. */
  put(sequence: S): void {
    this.#sequences.set(sequence.id, sequence);
  }

  /** Removes the sequence and frees its cache; false when it was not open. */
  forget(sequenceId: string): boolean {
    const sequence = this.#sequences.get(sequenceId);
    if (!sequence) return false;
    this.dropCache(sequence);
    this.#sequences.delete(sequenceId);
    return true;
  }

  /** Least recently used first. */
  values(): IterableIterator<S> {
    return this.#sequences.values();
  }

  /**
   * Reserves `bytes` of the cap for a proposal about to grow a cache, evicting idle caches least recently used first;
   * false when they cannot fit.
   */
  reserve(bytes: number): boolean {
    this.#sequences.makeRoom(bytes, (_, sequence) => sequence.busy);
    if (!this.#sequences.fits(bytes)) return false;
    this.#reservedBytes += bytes;
    return true;
  }

  /** Gives back reserved bytes: the proposal's cache holds them now, or it failed. */
  unreserve(bytes: number): void {
    this.#reservedBytes -= bytes;
  }

  /** Builds the sequence's cache in its drafter from the history. */
  async prefill(sequence: S): Promise<void> {
    const { id, history, sampling, served } = sequence;
    try {
      await served.drafter.open({ sequenceId: id, history, sampling, seed: sampling.seed });
    } catch (error) {
      // A failed open may have left part of a cache behind.
      served.drafter.close(id);
      throw error;
    }
    sequence.cached = true;
    this.#prefills++;
  }

  /**
   * A round settled: the sequence's cache keeps `kept` tokens of its history and proposal, then takes `appended` (a
   * dropped cache is rebuilt from the history instead).
   */
  commit(sequence: S, kept: number, appended: readonly number[]): void {
    if (sequence.cached) sequence.served.drafter.commit(sequence.id, kept, appended);
  }

  /** A tree round settled: the sequence's cache keeps the accepted `path` of its last tree, then takes `token`. */
  commitPath(sequence: S, path: readonly number[], token: number): void {
    if (!sequence.cached) return;
    const { drafter } = sequence.served;
    if (!isTreeDrafter(drafter)) throw new Error(`drafter ${sequence.served.spec.name} does not draft trees`);
    drafter.commitPath(sequence.id, path, token);
  }

  /** Closes the sequence in its drafter (freeing its cache); the table keeps the history to rebuild it. */
  dropCache(sequence: S): void {
    if (!sequence.cached) return;
    sequence.served.drafter.close(sequence.id);
    sequence.cached = false;
  }

  /** Bytes of the sequence's cache now. */
  cachedBytes(sequence: S): number {
    return sequence.cached ? sequence.served.drafter.cacheBytes(sequence.id) : 0;
  }

  /** KV cache bytes held by all drafters now. */
  cacheBytes(): number {
    let bytes = 0;
    for (const served of this.drafters.values()) bytes += served.drafter.cacheBytes();
    return bytes;
  }

  counters(): TableCounters {
    let cachedSequences = 0;
    for (const s of this.#sequences.values()) if (s.cached && s.served.kvBytesPerToken > 0) cachedSequences++;
    return {
      sequences: this.#sequences.size,
      cachedSequences,
      cacheBytes: this.cacheBytes(),
      capacityBytes: this.options.capacityBytes,
      evictions: this.#sequences.evictions,
      prefills: this.#prefills,
    };
  }
}
