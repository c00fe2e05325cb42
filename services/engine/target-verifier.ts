/**
 * The target's side of a round, for any number of sequences at once: bring each cache up to the committed history,
 * score every sequence's last committed token plus its K draft tokens (or its token tree) in ONE batched forward,
 * verify each round (verify.ts, tree-verify.ts), and trim each cache to the tokens that survived (a tree's accepted
 * path is compacted into place). Used by the in-process loop (generate.ts) and by the target service's micro-batcher
 * alike.
 */
import type { CausalLM } from "../runtime/causal-lm.ts";
import { branchSize, branchTokens, type LookaheadWindow, lookaheadAttention } from "./lookahead-layout.ts";
import type { TokenTree } from "./token-tree.ts";
import { compactionPlan, slotCount, treeAttention } from "./tree-attention.ts";
import { type TreeVerdict, verifyTree } from "./tree-verify.ts";
import { type RoundToVerify, type Verdict, verifyRound } from "./verify.ts";

export interface VerifyJob extends Omit<RoundToVerify, "targetLogits" | "vocabSize" | "position"> {
  readonly sequenceId: string;
  /** A token tree to verify instead of `draftTokens` (which must then be empty); lossless acceptance only. */
  readonly draftTree?: TokenTree;
  /**
   * With `draftTree`: a Lookahead decoding window scored in the same forward after the tree (lookahead-layout.ts),
   * whose rows come back in the verdict (`LookaheadVerdict`); the cache keeps none of them.
   */
  readonly lookahead?: LookaheadWindow;
  /**
   * Committed tokens (prompt and generated) from index `committedOffset` on, at least the last one; offset 0 means the
   * whole history, which lets a replica that lost the cache (restart, eviction, rebalance) rebuild it inside the same
   * forward.
   */
  readonly committed: readonly number[];
  readonly committedOffset: number;
}

/** A tree verdict and the target's logits rows for the job's Lookahead window, in forward order. */
export interface LookaheadVerdict extends TreeVerdict {
  readonly branchLogits: Float32Array;
}

/** The replica's cache is shorter than `committedOffset`: the job must be resent with more history. */
export class CacheMissError extends Error {
  constructor(readonly sequenceIds: readonly string[]) {
    super(`target cache lacks history for sequence(s) ${sequenceIds.join(", ")}; resend with committedOffset 0`);
    this.name = "CacheMissError";
  }
}

/**
 * Fills the target's caches with all but the last token of each history, in one batched forward (each sequence's
 * first round then scores its last committed token plus its draft, K+1 positions).
 */
export async function prefillTarget(
  target: CausalLM,
  sequences: readonly { readonly sequenceId: string; readonly history: readonly number[] }[],
): Promise<void> {
  for (const { sequenceId } of sequences) target.release(sequenceId);
  const batch = sequences
    .filter((s) => s.history.length > 1)
    .map((s) => ({ sequenceId: s.sequenceId, tokens: s.history.slice(0, -1) }));
  if (batch.length > 0) await target.forward(batch);
}

export async function verifyOnTarget(
  target: CausalLM,
  jobs: readonly VerifyJob[],
): Promise<(Verdict | TreeVerdict | LookaheadVerdict)[]> {
  for (const job of jobs) {
    if (job.committed.length === 0) throw new RangeError(`verify job ${job.sequenceId} carries no committed token`);
    if (job.lookahead && !job.draftTree) throw new RangeError(`verify job ${job.sequenceId}: a window needs a tree`);
    if (job.draftTree && (job.draftTokens.length > 0 || job.acceptance.kind !== "lossless")) {
      throw new RangeError(
        `verify job ${job.sequenceId}: a tree comes without draft tokens and is verified losslessly`,
      );
    }
  }
  const missing = jobs.filter((j) => target.sequenceLength(j.sequenceId) < j.committedOffset).map((j) => j.sequenceId);
  if (missing.length > 0) throw new CacheMissError(missing);
  const feeds = jobs.map((job) => {
    const historyLength = job.committedOffset + job.committed.length;
    // Keep what the cache holds of the history, but always re-feed the last committed token: its row predicts draft[0].
    const keep = Math.min(target.sequenceLength(job.sequenceId), historyLength - 1);
    if (target.sequenceLength(job.sequenceId) > keep) target.truncate(job.sequenceId, keep);
    const tail = job.committed.slice(keep - job.committedOffset);
    const { draftTree, lookahead } = job;
    if (!draftTree) return { sequenceId: job.sequenceId, tokens: tail.concat(job.draftTokens) };
    if (lookahead) {
      return {
        sequenceId: job.sequenceId,
        tokens: tail.concat(Array.from(draftTree.tokens), branchTokens(lookahead)),
        tree: lookaheadAttention(draftTree, lookahead, tail.length - 1),
      };
    }
    return {
      sequenceId: job.sequenceId,
      tokens: tail.concat(Array.from(draftTree.tokens)),
      tree: treeAttention(draftTree, tail.length - 1),
    };
  });
  const logits = await target.forward(feeds);
  const vocabSize = target.info.vocabSize;
  return jobs.map((job, i) => {
    const position = job.committedOffset + job.committed.length;
    const { draftTree, lookahead } = job;
    if (draftTree) {
      const rows = slotCount(draftTree);
      const end = logits[i].length - (lookahead ? branchSize(lookahead) : 0) * vocabSize;
      const verdict = verifyTree({
        ...job,
        tree: draftTree,
        targetLogits: logits[i].subarray(end - rows * vocabSize, end),
        vocabSize,
        position,
      });
      // The root sits at position − 1: keep it and the accepted path.
      target.compact(job.sequenceId, position - 1, Array.from(compactionPlan(verdict.path, position - 1).kept));
      return lookahead ? { ...verdict, branchLogits: logits[i].subarray(end) } : verdict;
    }
    const rows = job.draftTokens.length + 1;
    const verdict = verifyRound({
      ...job,
      targetLogits: logits[i].subarray(logits[i].length - rows * vocabSize),
      vocabSize,
      position,
    });
    target.truncate(job.sequenceId, position + verdict.accepted);
    return verdict;
  });
}
