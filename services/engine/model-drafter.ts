/**
 * A drafter that runs a small causal LM with its own KV cache per sequence: the int4 draft, a cost-scaled draft, or
 * an early-exit model (the first layers of the target's own checkpoint, early-exit-drafter.ts). Proposals of many
 * sequences advance together, one batched forward per draft step.
 */
import type { CausalLM } from "../runtime/causal-lm.ts";
import { argmax } from "../runtime/greedy.ts";
import { type Draft, type Drafter, DraftHistory, type DraftRequest, type DraftSequence } from "./drafter.ts";
import { Stream, uniform } from "./rng.ts";
import { distribution, drawSparse, isGreedy, type SparseDistribution, sparse } from "./sampling.ts";

export interface ModelDrafterOptions {
  /**
   * Reshapes each q before the draft token is drawn from it, e.g. to the fixed-point form that travels on the wire:
   * the token must be drawn from exactly the q the target will divide by.
   */
  readonly quantise?: (q: SparseDistribution) => SparseDistribution;
}

export class ModelDrafter implements Drafter {
  private readonly sequences = new DraftHistory();

  constructor(
    private readonly model: CausalLM,
    readonly name: string,
    private readonly options: ModelDrafterOptions = {},
  ) {}

  async open(sequence: DraftSequence): Promise<void> {
    const { sequenceId, history } = sequence;
    this.sequences.open(sequence);
    this.model.release(sequenceId);
    // Prefill all but the last token now, so the first proposal costs what every later one does.
    if (history.length > 1) await this.model.forward([{ sequenceId, tokens: this.embeddable(history.slice(0, -1)) }]);
  }

  /** Tokens of the history the cache lacks (at least one, so the step has logits to read). */
  private pending(sequenceId: string, history: readonly number[]): number[] {
    const cached = Math.max(0, Math.min(this.model.sequenceLength(sequenceId), history.length - 1));
    if (this.model.sequenceLength(sequenceId) > cached) this.model.truncate(sequenceId, cached);
    return this.embeddable(history.slice(cached));
  }

  /**
   * A target with a wider vocabulary can commit ids the draft model has no embedding for; they are fed as id 0. That
   * only worsens the draft's guesses, and verification keeps the output exact whatever the draft proposes.
   */
  private embeddable(tokens: number[]): number[] {
    const vocab = this.model.info.vocabSize;
    return tokens.map((t) => (t < vocab ? t : 0));
  }

  async propose(batch: readonly DraftRequest[]): Promise<Draft[]> {
    const work = batch.map(({ sequenceId, k }) => {
      const entry = this.sequences.get(sequenceId);
      entry.proposal = [];
      // The cache must hold history + k − 1 tokens after the last step.
      const room = this.model.info.contextLength - entry.history.length + 1;
      return {
        sequenceId,
        entry,
        k: Math.max(0, Math.min(k, room)),
        feed: [] as number[],
        q: [] as SparseDistribution[],
      };
    });
    for (const w of work) if (w.k > 0) w.feed = this.pending(w.sequenceId, w.entry.history);
    for (;;) {
      const active = work.filter((w) => w.entry.proposal.length < w.k);
      if (active.length === 0) break;
      const logits = await this.model.forward(active.map((w) => ({ sequenceId: w.sequenceId, tokens: w.feed })));
      const vocab = this.model.info.vocabSize;
      active.forEach((w, i) => {
        const rows = logits[i];
        const last = rows.subarray(rows.length - vocab);
        const { sampling, seed } = w.entry.open;
        let token: number;
        if (isGreedy(sampling)) {
          token = argmax(last);
        } else {
          const support = sparse(distribution(last, sampling));
          const q = this.options.quantise ? this.options.quantise(support) : support;
          const position = w.entry.history.length + w.entry.proposal.length;
          token = drawSparse(q, uniform(seed, position, Stream.draft));
          w.q.push(q);
        }
        w.entry.proposal.push(token);
        w.feed = [token];
      });
    }
    return work.map((w) =>
      isGreedy(w.entry.open.sampling)
        ? { tokens: [...w.entry.proposal] }
        : { tokens: [...w.entry.proposal], distributions: w.q },
    );
  }

  commit(sequenceId: string, length: number, tokens: readonly number[]): void {
    this.sequences.commit(sequenceId, length, tokens);
    if (this.model.sequenceLength(sequenceId) > length) this.model.truncate(sequenceId, length);
  }

  close(sequenceId: string): void {
    this.sequences.close(sequenceId);
    this.model.release(sequenceId);
  }

  cacheBytes(sequenceId?: string): number {
    return this.model.cacheBytes(sequenceId);
  }
}
