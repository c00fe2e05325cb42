/**
 * The Medusa drafter, in process: no draft model; the target's own heads propose. Each round's verify forward also
 * yields, at every position it scored, the heads' logits (a MedusaLM), and once the round is settled the row of the
 * last accepted position is the next round's proposal source (medusa-proposal.ts): one target forward a round.
 * Before the first round that row is the last of the prefill, which scored all but the last committed token.
 */
import type { MedusaLM } from "../runtime/causal-lm.ts";
import {
  type Draft,
  DraftHistory,
  type DraftRequest,
  type DraftSequence,
  type TreeDrafter,
  type TreeDraftRequest,
} from "./drafter.ts";
import { headsRowFromEnd, medusaChain, medusaTree } from "./medusa-proposal.ts";
import { slotOf, type TokenTree } from "./token-tree.ts";

export class MedusaDrafter implements TreeDrafter {
  private readonly sequences = new DraftHistory();
  /** Per sequence, the heads' row [heads × vocab] at the position that predicted the last committed token. */
  private readonly rows = new Map<string, Float32Array>();

  constructor(
    private readonly target: MedusaLM,
    readonly name = "medusa",
  ) {}

  async open(sequence: DraftSequence): Promise<void> {
    this.sequences.open(sequence);
    this.rows.delete(sequence.sequenceId);
  }

  /** The row to propose from, or undefined (no proposal) when the target has not scored the history yet. */
  private row(sequenceId: string): Float32Array | undefined {
    const known = this.rows.get(sequenceId);
    if (known) return known;
    const { history } = this.sequences.get(sequenceId);
    const outputs = this.target.lastHeadOutputs(sequenceId);
    if (!outputs || history.length < 2 || this.target.sequenceLength(sequenceId) !== history.length - 1)
      return undefined;
    return this.rowAt(outputs.medusaLogits, -1);
  }

  /** A copy of the heads' row `fromEnd` rows before the end of a forward's head logits. */
  private rowAt(medusaLogits: Float32Array, fromEnd: number): Float32Array | undefined {
    return headsRowFromEnd(medusaLogits, this.target.medusa.heads, this.target.info.vocabSize, fromEnd);
  }

  private keepRow(sequenceId: string, row: Float32Array | undefined): void {
    if (row) this.rows.set(sequenceId, row);
  }

  async propose(batch: readonly DraftRequest[]): Promise<Draft[]> {
    return batch.map(({ sequenceId, k }) => {
      const entry = this.sequences.get(sequenceId);
      const heads = this.row(sequenceId);
      const { sampling, seed } = entry.open;
      const draft = heads
        ? medusaChain(heads, this.target.info.vocabSize, k, sampling, seed, entry.history.length)
        : { tokens: [] };
      entry.proposal = [...draft.tokens];
      entry.tree = undefined;
      return draft;
    });
  }

  async proposeTrees(batch: readonly TreeDraftRequest[]): Promise<TokenTree[]> {
    return batch.map(({ sequenceId, shape }) => {
      const entry = this.sequences.get(sequenceId);
      const heads = this.row(sequenceId);
      const tree = medusaTree(
        heads ?? new Float32Array(0),
        this.target.info.vocabSize,
        heads ? shape : { ...shape, depth: 0 },
        entry.open.sampling,
      );
      entry.proposal = [];
      entry.tree = tree;
      return tree;
    });
  }

  /**
   * After a chain round: the verify forward's last K + 1 rows were the root and the K proposed tokens, so the row of
   * the last kept one is K + 1 − accepted rows from the end.
   */
  commit(sequenceId: string, length: number, tokens: readonly number[]): void {
    const entry = this.sequences.get(sequenceId);
    const accepted = length - entry.history.length;
    const proposed = entry.proposal.length;
    const outputs = this.target.lastHeadOutputs(sequenceId);
    this.rows.delete(sequenceId);
    if (outputs && tokens.length === 1 && accepted >= 0 && accepted <= proposed) {
      this.keepRow(sequenceId, this.rowAt(outputs.medusaLogits, accepted - proposed - 1));
    }
    this.sequences.commit(sequenceId, length, tokens);
  }

  /** After a tree round: the forward's last rows were the root and every node, in slot order. */
  commitPath(sequenceId: string, path: readonly number[], token: number): void {
    const { tree } = this.sequences.get(sequenceId);
    const outputs = this.target.lastHeadOutputs(sequenceId);
    this.rows.delete(sequenceId);
    if (outputs && tree) {
      const slot = path.length > 0 ? slotOf(path[path.length - 1]) : 0;
      this.keepRow(sequenceId, this.rowAt(outputs.medusaLogits, slot - tree.tokens.length - 1));
    }
    this.sequences.commitPath(sequenceId, path, token);
  }

  close(sequenceId: string): void {
    this.rows.delete(sequenceId);
    this.sequences.close(sequenceId);
  }

  cacheBytes(): number {
    return 0;
  }
}
