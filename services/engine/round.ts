/**
 * One speculation round of one sequence, the step every round loop drives: generate.ts in one process, and the
 * gateway's generation.ts with the draft and the verification in other services. The loop plans the round (its K),
 * gets the draft and the target's verdict (batching, pipelining and timing that I/O as it needs), then hands them
 * here: the tokens that survive the stop conditions are committed, the K policy learns the outcome, the drafter is
 * rolled back to what was kept, and the statistics record the round. No I/O and no clock.
 */
import type { KPolicy } from "./k-policy.ts";
import type { Committed, SequenceState } from "./sequence.ts";
import { emptyStats, type RequestStats, recordRound } from "./stats.ts";
import { favouriteChain, pathTokens, ROOT, type TokenTree } from "./token-tree.ts";
import type { Branching, TreeShaper } from "./tree-policy.ts";
import type { TreeVerdict } from "./tree-verify.ts";
import type { Verdict } from "./verify.ts";

export interface RoundPlan {
  /** 1 for a sequence's first round. */
  readonly round: number;
  /** Draft tokens to ask for; 0 runs the round as one step of plain decoding. A tree's depth. */
  readonly k: number;
  /** Draft a tree this wide and this large, K deep; absent for a chain. */
  readonly branching?: Branching;
}

/**
 * A round's draft as acceptance sees it (whatever else travelled with it stays with the loop): a chain, or a token
 * tree whose verdict names the accepted path. A tree round's K is its depth budget.
 */
export type RoundDraft = { readonly tokens: readonly number[] } | { readonly tree: TokenTree };

/** What a round did to its sequence. */
export interface RoundOutcome {
  readonly round: number;
  /** The K the round ran with: the plan's, or 0 when no draft came. */
  readonly k: number;
  /** Draft tokens proposed: a chain's length, or a tree's node count. */
  readonly proposed: number;
  readonly accepted: number;
  /** A tree round's accepted nodes, root down (accepted = path.length); absent for chains. */
  readonly path?: readonly number[];
  /** A tree round's depth; absent for chains. */
  readonly depth?: number;
  /** The target's token after the accepted ones (its correction, or the bonus token). */
  readonly token: number;
  /** Committed tokens before the round. */
  readonly historyLength: number;
  /** The tokens (and text) of the round that survived the stop conditions. */
  readonly committed: Committed;
}

/** The drafter's side of a sequence. */
export interface RoundDrafter {
  /**
   * Keep the first `historyLength + accepted` tokens of history + proposal, then append `token`; after a tree, append
   * the tokens of `path` and `token`.
   */
  rollBack(outcome: RoundOutcome): void;
}

/** A sequence advanced by speculation rounds; without a drafter every round is one step of plain decoding. */
export class SpeculativeSequence {
  readonly stats: RequestStats = emptyStats();
  #planned = 0;

  constructor(
    readonly sequence: SequenceState,
    private readonly policy: KPolicy,
    private readonly drafter?: RoundDrafter,
    private readonly shaper?: TreeShaper,
  ) {}

  /**
   * The next round: K as the policy wants it, within what the sequence may still add, or a tree (as deep as the
   * policy's K limit allows) if one pays.
   */
  plan(): RoundPlan {
    const budget = this.sequence.draftBudget();
    const k = this.drafter ? Math.min(this.policy.nextK(), budget) : 0;
    const tree = k > 0 ? this.shaper?.choose(k, Math.min(this.policy.maxK, budget)) : undefined;
    if (!tree) return { round: ++this.#planned, k };
    return { round: ++this.#planned, k: tree.depth, branching: { width: tree.width, nodes: tree.nodes } };
  }

  /**
   * Commits the round's accepted draft tokens and the target's token and tells the policy. `draft` is undefined when
   * the round asked for one and none came (it ran as plain decoding).
   */
  accept(plan: RoundPlan, draft: RoundDraft | undefined, verdict: Verdict | TreeVerdict): RoundOutcome {
    const historyLength = this.sequence.tokens.length;
    let kept: number[];
    let proposed: number;
    let path: readonly number[] | undefined;
    let depth: number | undefined;
    if (draft && "tree" in draft) {
      depth = Math.max(0, ...draft.tree.depths);
      path = treePath(draft.tree, "path" in verdict ? verdict.path : NO_TOKENS);
      kept = pathTokens(draft.tree, path);
      proposed = draft.tree.tokens.length;
      // The K policy sizes chains: it learns what the chain of the drafter's favourites would have kept.
      const favourites = favouriteChain(draft.tree, path);
      this.policy.observe(favourites.proposed, favourites.accepted);
      this.shaper?.observeTree(draft.tree, path, plan.branching && { depth: plan.k, ...plan.branching });
    } else {
      const proposal = draft?.tokens ?? NO_TOKENS;
      // A verdict from another process is not trusted to stay inside the draft.
      kept = proposal.slice(0, Math.min(verdict.accepted, proposal.length));
      proposed = proposal.length;
      this.policy.observe(proposed, kept.length);
      if (draft) this.shaper?.observeChain(plan.k, proposed, kept.length);
    }
    const accepted = kept.length;
    kept.push(verdict.token);
    const committed = this.sequence.commit(kept);
    return {
      round: plan.round,
      k: draft ? plan.k : 0,
      proposed,
      accepted,
      ...(path && { path, depth }),
      token: verdict.token,
      historyLength,
      committed,
    };
  }

  /** Rolls the drafter back to what the round kept; nothing to do once the sequence has ended. */
  rollBack(outcome: RoundOutcome): void {
    if (this.drafter && !this.sequence.finished) this.drafter.rollBack(outcome);
  }

  record(outcome: RoundOutcome, draftMs: number, verifyMs: number): void {
    recordRound(this.stats, {
      k: outcome.k,
      proposed: outcome.proposed,
      depth: outcome.depth,
      accepted: outcome.accepted,
      emitted: outcome.committed.tokens.length,
      draftMs,
      verifyMs,
    });
  }
}

const NO_TOKENS: readonly number[] = [];

/** The longest prefix of a claimed path that descends the tree from the root (a verdict is not trusted blindly). */
function treePath(tree: TokenTree, claimed: readonly number[]): number[] {
  const path: number[] = [];
  for (const node of claimed) {
    const parent = path.length === 0 ? ROOT : path[path.length - 1];
    if (!Number.isInteger(node) || node < 0 || node >= tree.tokens.length || tree.parents[node] !== parent) break;
    path.push(node);
  }
  return path;
}
