/**
 * Prompt lookup (Saxena 2023): propose the tokens that followed the most recent earlier occurrence of the sequence's
 * last n tokens in its prompt and generated text, trying the longest n first. No model: its drafts are deterministic,
 * so in sampling mode each proposal's q is one-hot (acceptance then happens with probability p(x)).
 */
import { type Draft, type Drafter, DraftHistory, type DraftRequest, type DraftSequence } from "./drafter.ts";
import { isGreedy, oneHot } from "./sampling.ts";

export interface NgramDrafterOptions {
  /** Longest and shortest suffix length to look up. */
  readonly maxNgram?: number;
  readonly minNgram?: number;
}

/** The continuation (up to k tokens) after the latest earlier occurrence of the last n tokens, or [] if none. */
export function lookupContinuation(history: readonly number[], n: number, k: number): number[] {
  const end = history.length;
  if (n <= 0 || end <= n) return [];
  for (let start = end - n - 1; start >= 0; start--) {
    let match = true;
    for (let j = 0; j < n; j++) {
      if (history[start + j] !== history[end - n + j]) {
        match = false;
        break;
      }
    }
    if (match) return history.slice(start + n, Math.min(start + n + k, end));
  }
  return [];
}

export class NgramDrafter implements Drafter {
  readonly name = "ngram";
  private readonly sequences = new DraftHistory();
  private readonly maxNgram: number;
  private readonly minNgram: number;

  constructor(options: NgramDrafterOptions = {}) {
    this.maxNgram = options.maxNgram ?? 3;
    this.minNgram = options.minNgram ?? 1;
  }

  async open(sequence: DraftSequence): Promise<void> {
    this.sequences.open(sequence);
  }

  async propose(batch: readonly DraftRequest[]): Promise<Draft[]> {
    return batch.map(({ sequenceId, k }) => {
      const entry = this.sequences.get(sequenceId);
      let tokens: number[] = [];
      for (let n = this.maxNgram; k > 0 && n >= this.minNgram && tokens.length === 0; n--) {
        tokens = lookupContinuation(entry.history, n, k);
      }
      entry.proposal = tokens;
      return isGreedy(entry.open.sampling) ? { tokens } : { tokens, distributions: tokens.map(oneHot) };
    });
  }

  commit(sequenceId: string, length: number, tokens: readonly number[]): void {
    this.sequences.commit(sequenceId, length, tokens);
  }

  close(sequenceId: string): void {
    this.sequences.close(sequenceId);
  }

  cacheBytes(): number {
    return 0;
  }
}
