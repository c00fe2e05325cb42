/**
 * Medusa as a self-drafter (self-drafter.ts), the form a target replica runs it in: each sequence keeps the heads'
 * row of the position whose classifier gave its last committed token, taken from the forward that verified the round;
 * the next round's tree grows from that row (medusa-proposal.ts). A fresh state has no row yet: its first round is a
 * plain decoding step, whose forward yields one.
 */
import type { MedusaLM } from "../runtime/causal-lm.ts";
import { headsRowFromEnd, medusaTree } from "./medusa-proposal.ts";
import type { SelfDraftAsk, SelfDrafter, SelfDraftRound, SelfDraftState, SelfDraftVerdict } from "./self-drafter.ts";
import { chainTree, slotOf } from "./token-tree.ts";

class MedusaState implements SelfDraftState {
  #row: Float32Array | undefined;
  #length: number;

  constructor(
    private readonly target: MedusaLM,
    private readonly sequenceId: string,
    history: readonly number[],
  ) {
    this.#length = history.length;
  }

  get length(): number {
    return this.#length;
  }

  plan({ depth, width, nodes, room, sampling }: SelfDraftAsk): SelfDraftRound {
    const row = this.#row;
    if (!row || depth === 0 || room === 0) return { tree: chainTree([]) };
    const vocab = this.target.info.vocabSize;
    return { tree: medusaTree(row, vocab, { depth, width, nodes: Math.min(nodes, room) }, sampling) };
  }

  /** The forward's last rows were the root and the tree's nodes in slot order; the last accepted one's row is kept. */
  settle(round: SelfDraftRound, verdict: SelfDraftVerdict, history: readonly number[]): void {
    this.#length = history.length;
    const outputs = this.target.lastHeadOutputs(this.sequenceId);
    this.#row = undefined;
    if (!outputs) return;
    const path = "path" in verdict ? verdict.path : [];
    const slot = path.length > 0 ? slotOf(path[path.length - 1]) : 0;
    const { medusa, info } = this.target;
    this.#row = headsRowFromEnd(
      outputs.medusaLogits,
      medusa.heads,
      info.vocabSize,
      slot - round.tree.tokens.length - 1,
    );
  }
}

/** Medusa over a target whose graph carries the heads. */
export function medusaSelfDrafter(target: MedusaLM): SelfDrafter {
  return {
    name: "medusa",
    open: (sequenceId, history) => new MedusaState(target, sequenceId, history),
  };
}
