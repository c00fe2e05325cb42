/**
 * A deliberately bad drafter for losslessness tests: it proposes tokens uniformly at random over a vocabulary,
 * ignoring the context. In sampling mode its q is that uniform distribution, so it is a valid (if useless) sampler.
 */
import {
  type Draft,
  type Drafter,
  DraftHistory,
  type DraftRequest,
  type DraftSequence,
} from "../../services/engine/drafter.ts";
import { Stream, uniform } from "../../services/engine/rng.ts";
import { drawSparse, isGreedy, type SparseDistribution } from "../../services/engine/sampling.ts";

export class RandomDrafter implements Drafter {
  readonly name = "random";
  private readonly sequences = new DraftHistory();
  private readonly q: SparseDistribution;

  constructor(vocabSize: number) {
    this.q = {
      ids: Int32Array.from({ length: vocabSize }, (_, i) => i),
      probs: new Float32Array(vocabSize).fill(1 / vocabSize),
    };
  }

  async open(sequence: DraftSequence): Promise<void> {
    this.sequences.open(sequence);
  }

  async propose(batch: readonly DraftRequest[]): Promise<Draft[]> {
    return batch.map(({ sequenceId, k }) => {
      const entry = this.sequences.get(sequenceId);
      const { seed } = entry.open;
      const start = entry.history.length;
      entry.proposal = Array.from({ length: k }, (_, i) => drawSparse(this.q, uniform(seed, start + i, Stream.draft)));
      return isGreedy(entry.open.sampling)
        ? { tokens: [...entry.proposal] }
        : { tokens: [...entry.proposal], distributions: entry.proposal.map(() => this.q) };
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
