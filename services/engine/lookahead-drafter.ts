/**
 * Lookahead decoding as a self-drafter (self-drafter.ts), the form a target replica runs it in: each sequence's
 * LookaheadSequence (its n-gram pool and Jacobi window) plans a round's candidates and window, and settles from the
 * rows the same forward scored for the window.
 */
import { DEFAULT_LOOKAHEAD, type LookaheadConfig, LookaheadSequence, lookaheadConfig } from "./lookahead.ts";
import type { SelfDraftAsk, SelfDrafter, SelfDraftRound, SelfDraftState, SelfDraftVerdict } from "./self-drafter.ts";
import { chainTree } from "./token-tree.ts";

class LookaheadState implements SelfDraftState {
  readonly #sequence: LookaheadSequence;
  #length: number;
  /** The last committed token: the root of the next round. */
  #root: number;

  constructor(
    config: LookaheadConfig,
    history: readonly number[],
    private readonly vocabSize: number,
  ) {
    this.#sequence = new LookaheadSequence(config, history);
    this.#length = history.length;
    this.#root = history[history.length - 1];
  }

  get length(): number {
    return this.#length;
  }

  plan({ depth, room }: SelfDraftAsk): SelfDraftRound {
    // K = 0 is a plain decoding step: no candidates, and no window to pay for either.
    if (depth === 0) return { tree: chainTree([]) };
    const { tree, window } = this.#sequence.plan(this.#root, depth, room);
    return { tree, lookahead: window };
  }

  settle(round: SelfDraftRound, verdict: SelfDraftVerdict, history: readonly number[]): void {
    // A round that scored no window (out of room, or a plain decoding step) has no rows to advance it by.
    const rows = "branchLogits" in verdict ? verdict.branchLogits : undefined;
    this.#sequence.settle(
      { tree: round.tree, window: rows ? (round.lookahead ?? []) : [] },
      rows ?? new Float32Array(0),
      this.vocabSize,
      history,
      history.length - this.#length,
    );
    this.#length = history.length;
    this.#root = history[history.length - 1];
  }
}

/** Lookahead decoding; each sequence's W, N and G are its first ask's, else `defaults`. */
export function lookaheadDrafter(vocabSize: number, defaults: LookaheadConfig = DEFAULT_LOOKAHEAD): SelfDrafter {
  return {
    name: "lookahead",
    open(_sequenceId, history, { lookahead = {} }) {
      const config = lookaheadConfig({
        window: lookahead.window || defaults.window,
        ngram: lookahead.ngram || defaults.ngram,
        candidates: lookahead.candidates || defaults.candidates,
      });
      return new LookaheadState(config, history, vocabSize);
    },
  };
}
