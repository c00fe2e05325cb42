/**
 * A Medusa proposal from the heads' logits at one position: the position whose classifier row gave the round's root
 * (the last committed token), so head i's row is a guess of the token i + 1 places below the root. A pure function
 * of that row, the shape and the request's sampling: the replica that ran the forward could compute it as well as the
 * in-process drafter does. Pure.
 */
import type { Draft, TreeShape } from "./drafter.ts";
import { topTokens } from "./model-drafter.ts";
import { Stream, uniform } from "./rng.ts";
import {
  distribution,
  drawSparse,
  isGreedy,
  type SamplingParams,
  type SparseDistribution,
  sparse,
} from "./sampling.ts";
import { ROOT, type TokenTree, tokenTree } from "./token-tree.ts";

/**
 * A copy of one row, [heads × vocab], of a forward's head logits ([positions × heads × vocab]): `fromEnd` rows before
 * the end (-1: the last). Undefined when the forward scored fewer rows.
 */
export function headsRowFromEnd(
  medusaLogits: Float32Array,
  heads: number,
  vocab: number,
  fromEnd: number,
): Float32Array | undefined {
  const width = heads * vocab;
  const at = medusaLogits.length / width + fromEnd;
  return at >= 0 && fromEnd < 0 ? medusaLogits.slice(at * width, (at + 1) * width) : undefined;
}

/** Head `head`'s logits in a row of [heads × vocab]. */
function headRow(heads: Float32Array, vocab: number, head: number): Float32Array {
  return heads.subarray(head * vocab, (head + 1) * vocab);
}

/**
 * A chain of up to k tokens (no more than there are heads), token j from head j: its argmax when greedy, else drawn
 * from the head's distribution under the request's sampling, which is then the q of speculative sampling. The heads
 * do not see each other's tokens, so q_j does not depend on the earlier draws: each token is still drawn from the q
 * sent with it, which is all lossless verification needs. Draws use (seed, position + j, draft), `position` being the
 * absolute position of the first draft token.
 */
export function medusaChain(
  heads: Float32Array,
  vocab: number,
  k: number,
  sampling: SamplingParams,
  seed: number,
  position: number,
): Draft {
  const count = Math.min(Math.max(0, k), heads.length / vocab);
  const tokens: number[] = [];
  const distributions: SparseDistribution[] = [];
  for (let j = 0; j < count; j++) {
    const q = sparse(distribution(headRow(heads, vocab, j), sampling));
    tokens.push(isGreedy(sampling) ? q.ids[0] : drawSparse(q, uniform(seed, position + j, Stream.draft)));
    distributions.push(q);
  }
  return isGreedy(sampling) ? { tokens } : { tokens, distributions };
}

interface Candidate {
  readonly token: number;
  /** Its parent's node number in the tree being built, or ROOT. */
  readonly parent: number;
  readonly depth: number;
  /** Sum of the heads' log-probabilities along the path. */
  readonly score: number;
}

/**
 * Medusa's sparse tree, grown for this row: each head offers its `width` most probable tokens (under the request's
 * sampling, so tokens the target can never emit are left out; the plain softmax when greedy), a path's score is the
 * product of its heads' probabilities, and the tree is the `nodes` most probable paths up to `depth` (at most one
 * level per head). Grown best first, so every node's parent is in the tree before it. The nodes are deterministic
 * functions of the row: verification treats them as q = 1 on the drafted token, which is lossless under sampling too.
 */
export function medusaTree(heads: Float32Array, vocab: number, shape: TreeShape, sampling: SamplingParams): TokenTree {
  const depth = Math.min(shape.depth, heads.length / vocab);
  const width = Math.max(1, shape.width);
  const ranking: SamplingParams = isGreedy(sampling) ? { temperature: 1 } : sampling;
  const offers = Array.from({ length: Math.max(0, depth) }, (_, j) =>
    topTokens(distribution(headRow(heads, vocab, j), ranking), width),
  );
  const tokens: number[] = [];
  const parents: number[] = [];
  const open: Candidate[] =
    depth > 0 ? offers[0].map(([token, logp]) => ({ token, parent: ROOT, depth: 1, score: logp })) : [];
  while (tokens.length < shape.nodes && open.length > 0) {
    let best = 0;
    for (let i = 1; i < open.length; i++) {
      if (
        open[i].score > open[best].score ||
        (open[i].score === open[best].score && open[i].depth < open[best].depth)
      ) {
        best = i;
      }
    }
    const [chosen] = open.splice(best, 1);
    const node = tokens.length;
    tokens.push(chosen.token);
    parents.push(chosen.parent);
    if (chosen.depth < depth) {
      for (const [token, logp] of offers[chosen.depth]) {
        open.push({ token, parent: node, depth: chosen.depth + 1, score: chosen.score + logp });
      }
    }
  }
  return tokenTree(tokens, parents);
}
