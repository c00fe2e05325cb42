/**
 * Verification of a token tree: from the target's distribution at the root and at every node (one forward, logits
 * row s for slot s), the accepted root-to-node path and the token the target appends after it. The tree analogue of
 * verify.ts, and equal to it on a chain: same verdicts, same random draws. Pure.
 */

import { argmax } from "../runtime/greedy.ts";
import { Stream, uniform } from "./rng.ts";
import {
  distribution,
  drawToken,
  isGreedy,
  oneHot,
  probabilityOf,
  type SamplingParams,
  type SparseDistribution,
} from "./sampling.ts";
import { children, depthOf, pathTo, ROOT, slotOf, type TokenTree } from "./token-tree.ts";
import { type RoundRandomness, residual, type Verdict } from "./verify.ts";

/** A round's outcome on a tree: commit the tokens of `path` (accepted = path.length), then append `token`. */
export interface TreeVerdict extends Verdict {
  /** Accepted nodes, from a child of the root down. */
  readonly path: readonly number[];
}

/**
 * Greedy verification: the deepest node whose token, and every ancestor's, equals the target's argmax at its parent
 * (the first in node order when two are equally deep, as siblings carrying the same token can be), then the target's
 * argmax after it. `targetArgmax(slot)` is read at most once per slot, and only where the path can go.
 */
export function acceptTreeGreedy(tree: TokenTree, targetArgmax: (slot: number) => number): TreeVerdict {
  const argmaxAt = new Int32Array(tree.tokens.length + 1).fill(-1);
  const argmaxOf = (node: number) => {
    const slot = slotOf(node);
    if (argmaxAt[slot] < 0) argmaxAt[slot] = targetArgmax(slot);
    return argmaxAt[slot];
  };
  const agrees = new Uint8Array(tree.tokens.length);
  let deepest = ROOT;
  for (let node = 0; node < tree.tokens.length; node++) {
    const parent = tree.parents[node];
    if ((parent === ROOT || agrees[parent] === 1) && argmaxOf(parent) === tree.tokens[node]) {
      agrees[node] = 1;
      if (tree.depths[node] > depthOf(tree, deepest)) deepest = node;
    }
  }
  const path = pathTo(tree, deepest);
  return { path, accepted: path.length, token: argmaxOf(deepest) };
}

/**
 * The target's distribution at a node while its children are tried: p = weights / mass. Kept unnormalised so that
 * p at its first try is the target's row itself (mass 1), which makes a chain's arithmetic exactly verify.ts's.
 */
export interface NodeTarget {
  readonly weights: Float32Array;
  readonly mass: number;
}

/** How p changes after a child drawn from q is rejected. */
export type RejectionUpdate = (p: NodeTarget, q: SparseDistribution) => NodeTarget;

/** p ← norm(max(0, p − q)); p unchanged when rounding leaves the residual no mass (rejection had probability ~0). */
export const subtractRejected: RejectionUpdate = (p, q) => {
  const weights = residual(p.weights, { ids: q.ids, probs: q.probs.map((x) => x * p.mass) });
  let mass = 0;
  for (let i = 0; i < weights.length; i++) mass += weights[i];
  return mass > 0 ? { weights, mass } : p;
};

/**
 * Multi-candidate speculative sampling (SpecInfer, Miao et al. 2024, Theorem 4.2): at a node, try its children in
 * node order, accepting child x drawn from q with probability min(1, p(x)/q(x)); after each rejection p ← norm(max(0,
 * p − q)); descend into an accepted child; when all are rejected, or at a leaf, draw the token from what is left of
 * p. Emitted tokens follow the target's distribution exactly, whatever the tree and the q's, provided each node's
 * token was drawn from its q independently of its siblings'. Without `tree.distributions` the drafts count as
 * deterministic (q = 1 on the drafted token): x is accepted with probability p(x), else p(x) is zeroed and p
 * renormalised. `targetDistribution(slot)` is p at that slot, read once per node visited.
 *
 * Randomness: the try of the child of rank r among its siblings, at depth d, uses (seed, position + d − 1, accept,
 * lane r), and the final draw after a node of depth d uses (seed, position + d, target, lane 0), where `position` is
 * the absolute position of the root's children (as a chain's draft[0]). Each round visits one node per depth, so no
 * number is used twice, and on a chain these are verify.ts's draws.
 */
export function acceptTreeSpeculative(
  tree: TokenTree,
  targetDistribution: (slot: number) => Float32Array,
  randomness: RoundRandomness,
  onRejection: RejectionUpdate = subtractRejected,
): TreeVerdict {
  const { seed, position } = randomness;
  const path: number[] = [];
  for (let node = ROOT; ; ) {
    const at = position + depthOf(tree, node);
    const p: NodeTarget = { weights: targetDistribution(slotOf(node)), mass: 1 };
    const trial = tryChildren(tree, node, p, (rank) => uniform(seed, at, Stream.accept, rank), onRejection);
    if ("rest" in trial) {
      return {
        path,
        accepted: path.length,
        token: drawToken(trial.rest.weights, uniform(seed, at, Stream.target, 0)),
      };
    }
    path.push(trial.child);
    node = trial.child;
  }
}

/** The first child of `node` accepted against p, or, all rejected, what is left of p. */
function tryChildren(
  tree: TokenTree,
  node: number,
  p: NodeTarget,
  uniformOfRank: (rank: number) => number,
  onRejection: RejectionUpdate,
): { readonly child: number } | { readonly rest: NodeTarget } {
  const candidates = children(tree, node);
  let rest = p;
  for (let rank = 0; rank < candidates.length; rank++) {
    const child = candidates[rank];
    const x = tree.tokens[child];
    const q = tree.distributions?.[child] ?? oneHot(x);
    const qx = probabilityOf(q, x);
    const px = x < rest.weights.length ? rest.weights[x] : 0;
    if (qx > 0 && uniformOfRank(rank) * qx * rest.mass < px) return { child };
    rest = onRejection(rest, q);
  }
  return { rest };
}

export interface TreeToVerify {
  readonly tree: TokenTree;
  /** Target logits, row-major [(size + 1) × vocabSize], one row per slot. */
  readonly targetLogits: Float32Array;
  readonly vocabSize: number;
  readonly sampling: SamplingParams;
  /** Per-request seed (ignored when greedy). */
  readonly seed: number;
  /** Absolute sequence position of the root's children (the number of tokens committed before this round). */
  readonly position: number;
}

/** Verifies one tree round from the target's logits: greedy, or lossless speculative sampling. */
export function verifyTree(round: TreeToVerify): TreeVerdict {
  const { tree, targetLogits, vocabSize, sampling, seed, position } = round;
  const rows = tree.tokens.length + 1;
  if (targetLogits.length !== rows * vocabSize) {
    throw new Error(`verifyTree: expected ${rows} logits rows of ${vocabSize}, got ${targetLogits.length} values`);
  }
  const row = (slot: number) => targetLogits.subarray(slot * vocabSize, (slot + 1) * vocabSize);
  if (isGreedy(sampling)) return acceptTreeGreedy(tree, (slot) => argmax(row(slot)));
  return acceptTreeSpeculative(tree, (slot) => distribution(row(slot), sampling), { seed, position });
}
