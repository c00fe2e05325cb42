/**
 * The drafter interface: anything that proposes the next K tokens of a sequence. Implementations: model-drafter.ts
 * (a small model, also used for early exit), ngram-drafter.ts (prompt lookup). Batched over sequences so a draft
 * service can serve many sequences per forward.
 */
import type { SamplingParams, SparseDistribution } from "./sampling.ts";

export interface DraftSequence {
  readonly sequenceId: string;
  /** Every committed token (prompt and generated so far). */
  readonly history: readonly number[];
  /** The request's sampling; a drafter samples its proposals with the same parameters. */
  readonly sampling: SamplingParams;
  /** The request's seed (rng.ts): draft draws are keyed by (seed, position, draft stream). */
  readonly seed: number;
}

export interface DraftRequest {
  readonly sequenceId: string;
  /** Tokens wanted; 0 is allowed and costs nothing. */
  readonly k: number;
}

export interface Draft {
  /** Up to k proposed tokens (a drafter may propose fewer, even none). */
  readonly tokens: number[];
  /** When sampling (temperature > 0): the distribution each token was drawn from, for lossless verification. */
  readonly distributions?: SparseDistribution[];
}

export interface Drafter {
  /** The drafter's name as requests and statistics spell it. */
  readonly name: string;
  /** Starts (or restarts, replacing any state) a sequence with its history. */
  open(sequence: DraftSequence): Promise<void>;
  /** Proposes continuations for many sequences at once; results in request order. */
  propose(batch: readonly DraftRequest[]): Promise<Draft[]>;
  /**
   * After verification: keep the first `length` tokens of history + the last proposal (rolling back rejected draft
   * tokens), then append `tokens` (the target's correction or bonus token).
   */
  commit(sequenceId: string, length: number, tokens: readonly number[]): void;
  /** Forgets the sequence and frees what it held. Unknown ids are ignored. */
  close(sequenceId: string): void;
  /** Bytes held for one sequence, or for all when no id is given (0 for drafters without caches). */
  cacheBytes(sequenceId?: string): number;
}

/** Per-sequence bookkeeping every drafter shares: the committed history and the last proposal. */
export class DraftHistory {
  private readonly sequences = new Map<string, { history: number[]; proposal: number[]; open: DraftSequence }>();

  open(sequence: DraftSequence): void {
    this.sequences.set(sequence.sequenceId, { history: [...sequence.history], proposal: [], open: sequence });
  }

  get(sequenceId: string): { history: number[]; proposal: number[]; open: DraftSequence } {
    const entry = this.sequences.get(sequenceId);
    if (!entry) throw new Error(`drafter: unknown sequence ${sequenceId}`);
    return entry;
  }

  /** Applies a commit and returns the new history. */
  commit(sequenceId: string, length: number, tokens: readonly number[]): number[] {
    const entry = this.get(sequenceId);
    const combined = entry.history.concat(entry.proposal);
    if (length < 0 || length > combined.length) {
      throw new Error(`drafter: cannot keep ${length} of ${combined.length} tokens of sequence ${sequenceId}`);
    }
    entry.history = combined.slice(0, length).concat(tokens);
    entry.proposal = [];
    return entry.history;
  }

  close(sequenceId: string): boolean {
    return this.sequences.delete(sequenceId);
  }

  ids(): IterableIterator<string> {
    return this.sequences.keys();
  }
}
