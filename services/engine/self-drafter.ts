/**
 * Drafters that live with the target (Medusa heads, Lookahead decoding): they draft each round from the target's own
 * forwards, so a round needs no draft model and, across services, no draft hop. Each sequence keeps a drafting state
 * beside its target cache: before a forward the state plans the round's tree, and the same forward that verifies the
 * tree yields what the state settles on for the next round (head logits at the accepted position, a Jacobi window's
 * new guesses). The in-process loop and a target replica drive the same states.
 */
import type { LookaheadConfig } from "./lookahead.ts";
import type { LookaheadWindow } from "./lookahead-layout.ts";
import type { SamplingParams } from "./sampling.ts";
import type { LookaheadVerdict } from "./target-verifier.ts";
import type { TokenTree } from "./token-tree.ts";
import type { TreeVerdict } from "./tree-verify.ts";
import type { Verdict } from "./verify.ts";

/** What one round may draft: its depth (the round's K), its shape, and the room the target's context leaves. */
export interface SelfDraftAsk {
  readonly depth: number;
  /** Children per node at most and nodes in all (width 1: a chain). */
  readonly width: number;
  readonly nodes: number;
  /** Tokens the context still holds after the committed history. */
  readonly room: number;
  readonly sampling: SamplingParams;
  readonly seed: number;
  /** Lookahead decoding's W, N and G; zeros (or absent) take the drafter's defaults. */
  readonly lookahead?: Partial<LookaheadConfig>;
}

/** A round's draft: the tree to verify, rooted at the last committed token, and what else its forward scores. */
export interface SelfDraftRound {
  /** Empty, with no window either: a plain decoding round. */
  readonly tree: TokenTree;
  /** Lookahead's Jacobi window, scored after the tree (its rows come back in the verdict: `LookaheadVerdict`). */
  readonly lookahead?: LookaheadWindow;
}

/** The verdict of a self-drafted round's forward: a plain step's, a tree's, or a tree's with the window's rows. */
export type SelfDraftVerdict = Verdict | TreeVerdict | LookaheadVerdict;

/** One sequence's drafting state. */
export interface SelfDraftState {
  /** The committed tokens the state stands on: a round for another history needs a fresh state. */
  readonly length: number;
  plan(ask: SelfDraftAsk): SelfDraftRound;
  /**
   * After the forward that verified `round` (a plain decoding step when its tree was empty): `history` is the committed
   * history now, the verdict's tokens in.
   */
  settle(round: SelfDraftRound, verdict: SelfDraftVerdict, history: readonly number[]): void;
}

export interface SelfDrafter {
  /** The kind requests name it by ("medusa", "lookahead"). */
  readonly name: string;
  /**
   * A state for the sequence, standing on `history` (its target cache is built from the same history), with the
   * settings of its first `ask`, which it keeps.
   */
  open(sequenceId: string, history: readonly number[], ask: SelfDraftAsk): SelfDraftState;
}
