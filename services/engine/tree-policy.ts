/**
 * Tree shape policy: whether a round drafts a tree, and how deep, how wide and how many nodes. A tree pays when the
 * tokens its extra nodes are expected to add outweigh what drafting and verifying them costs, and both sides are
 * measured: the acceptance of each sibling rank at each depth, learnt from the rounds that ran, and the pair's draft
 * and verify costs (CostModel: on a GPU at batch 1 verifying is nearly flat, on this CPU it is not). Each round, every
 * depth from the K policy's K to the deepest allowed and every width up to the limit is scored as the best tree of
 * each node budget under those acceptances (as Sequoia and EAGLE-2 grow trees: the nodes with the most probable
 * paths), beside the chain of K, and the most expected tokens per millisecond wins. What the model expects is then
 * checked against what rounds gave, chains and trees apart, and scaled by that ratio, so a model that flatters trees
 * (its acceptances treat siblings as independent; the drafter ranks nodes by its own probabilities) stops winning.
 * Shared by the requests of one drafter/target pair, like CostModel. Pure: the loop passes the outcomes in.
 */

import type { TreeShape } from "./drafter.ts";
import type { RoundCosts, RoundWork } from "./k-policy.ts";
import { ROOT, type TokenTree, TREE_LIMITS } from "./token-tree.ts";

/** How a round's tree may branch: at most `width` children per node and `nodes` in all. */
export interface Branching {
  readonly width: number;
  readonly nodes: number;
}

export interface TreeShaper {
  /**
   * The tree of a round whose chain would be `k` deep (the K policy's K), at most `maxDepth` deep; undefined for the
   * chain.
   */
  choose(k: number, maxDepth: number): TreeShape | undefined;
  /**
   * A tree round: the tree verified, the accepted path (node indices, root down) and the shape the round asked for
   * (the drafter may give less; absent: the tree's own).
   */
  observeTree(tree: TokenTree, path: readonly number[], asked?: TreeShape): void;
  /** A chain round that asked for `k` tokens: `proposed` came, of which the first `accepted` were kept. */
  observeChain(k: number, proposed: number, accepted: number): void;
}

/** Always the same branching, K deep. */
export class FixedTreeShape implements TreeShaper {
  constructor(private readonly shape: Branching) {}
  choose(k: number): TreeShape {
    return { depth: k, ...this.shape };
  }
  observeTree(): void {}
  observeChain(): void {}
}

/**
 * A tree's draft work: a model drafter grows it one level per forward and feeds the root and every node expanded so
 * far again, up to `width` more per level (model-drafter.ts), so level l feeds 1 + width·l positions.
 */
export function treeDraftWork(depth: number, width: number): { forwards: number; positions: number } {
  return { forwards: depth, positions: depth + (width * depth * (depth - 1)) / 2 };
}

/** A tree round's work: the draft work of a tree that deep and wide, and the root's position besides the nodes'. */
export function treeWork(tree: TokenTree): RoundWork {
  const { depth, width } = treeExtent(tree);
  const draft = treeDraftWork(depth, width);
  return { draftForwards: draft.forwards, draftPositions: draft.positions, positions: tree.tokens.length + 1 };
}

/** A tree's depth and its most children under one node. */
function treeExtent(tree: TokenTree): { depth: number; width: number } {
  const counts = new Map<number, number>();
  for (const parent of tree.parents) counts.set(parent, (counts.get(parent) ?? 0) + 1);
  return { depth: Math.max(0, ...tree.depths), width: Math.max(1, ...counts.values()) };
}

/**
 * Expected tokens of the best trees `depth` deep with up to `width` children per node, by node budget: entry n is for
 * n nodes. `accept(d, r)` is the probability that the child of rank r (1 = the drafter's favourite) of an accepted node
 * at depth d − 1 is accepted; a node's path probability is the product along its path, and the best tree of n nodes
 * holds the n most probable paths (a child is never more probable than its parent, so the set is a tree). Expected
 * tokens = 1 (the target's own) + the sum of the nodes' path probabilities.
 */
export function expectedTokensByNodes(
  accept: (depth: number, rank: number) => number,
  depth: number,
  width: number,
  maxNodes: number,
): number[] {
  const expected = [1];
  // A node's rank-r child becomes a candidate once its rank r − 1 sibling is in the tree: drafters rank siblings.
  // Candidates are kept sorted by path probability, the most probable last.
  const open: { p: number; depth: number; parentP: number; rank: number }[] = [];
  const offer = (parentP: number, parentDepth: number, rank: number) => {
    if (parentDepth >= depth || rank > width) return;
    const p = parentP * accept(parentDepth + 1, rank);
    let low = 0;
    for (let high = open.length; low < high; ) {
      const mid = (low + high) >> 1;
      if (open[mid].p < p) low = mid + 1;
      else high = mid;
    }
    open.splice(low, 0, { p, depth: parentDepth + 1, parentP, rank });
  };
  offer(1, 0, 1);
  while (expected.length <= maxNodes && open.length > 0) {
    const node = open.pop() as (typeof open)[number];
    if (node.p <= 0) break;
    expected.push(expected[expected.length - 1] + node.p);
    offer(node.p, node.depth, 1);
    offer(node.parentP, node.depth - 1, node.rank + 1);
  }
  return expected;
}

/** What a round may be: a chain `k` deep, or a tree from `k` to `maxDepth` deep within `limit`. */
export interface ShapeChoice {
  readonly k: number;
  readonly maxDepth: number;
  readonly limit: Branching;
  /** What trees have given per token expected, relative to what chains have: trees' expectations are scaled by it. */
  readonly treeGain: number;
}

/**
 * The tree with the most expected tokens per millisecond, or undefined when the chain of K has more: each depth from
 * K to the deepest allowed, each width up to the limit and each node budget above K (fewer nodes would be a shorter
 * chain, the K policy's call).
 */
export function bestTree(
  accept: (depth: number, rank: number) => number,
  costs: RoundCosts,
  choice: ShapeChoice,
): TreeShape | undefined {
  const { k, limit, treeGain } = choice;
  const chain = expectedTokensByNodes(accept, k, 1, k);
  let best: TreeShape | undefined;
  let bestRate = chain[chain.length - 1] / (costs.draftMs(k, k) + costs.verifyMs(k + 1));
  const verifyMs = Array.from({ length: limit.nodes + 2 }, (_, positions) => costs.verifyMs(positions));
  const deepest = Math.max(k, Math.min(choice.maxDepth, TREE_LIMITS.maxDepth));
  for (let width = 2; width <= limit.width; width++) {
    let shallower: number[] = [];
    for (let depth = k; depth <= deepest; depth++) {
      const expected = expectedTokensByNodes(accept, depth, width, limit.nodes);
      // Where the depth no longer limits the best trees, deeper ones only cost more draft forwards.
      if (expected.length === shallower.length && expected.every((e, n) => e === shallower[n])) break;
      shallower = expected;
      const draft = treeDraftWork(depth, width);
      const draftMs = costs.draftMs(draft.forwards, draft.positions);
      for (let nodes = k + 1; nodes < expected.length; nodes++) {
        const rate = (treeGain * expected[nodes]) / (draftMs + verifyMs[nodes + 1]);
        if (rate > bestRate) {
          best = { depth, width, nodes };
          bestRate = rate;
        }
      }
    }
  }
  return best;
}

export interface TreePolicyOptions {
  /** Rounds after which an observation weighs half as much. */
  readonly halfLife?: number;
  /** Acceptance of the favourite child before any round has shown it (the pair's α when known). */
  readonly initialAlpha?: number;
}

/** The costs a policy weighs: the pair's CostModel, which also knows the pair's recent α. */
export interface PolicyCosts extends RoundCosts {
  readonly alpha?: number;
}

/** Pseudo-trials a rank's prior counts for, and a rank's pooled estimate counts for at one depth. */
const PRIOR_TRIALS = 4;
const POOL_TRIALS = 4;
/** Tokens at the ratio 1 that a calibration starts from: a few rounds' worth. */
const CALIBRATION_TOKENS = 16;

type RoundKind = "chain" | "tree";

/**
 * Chooses each round's tree from measured acceptance per depth and sibling rank and the pair's measured costs.
 * Counts decay, so an estimate that stops being fed (a tree not drafted for a while) drifts back to its prior, and a
 * shape given up on is tried again once the prior says it might pay.
 */
export class TreePolicy implements TreeShaper {
  private readonly width: number;
  private readonly maxNodes: number;
  private readonly keep: number;
  private readonly initialAlpha: number;
  /** Decayed trials and acceptances, indexed [depth − 1][rank − 1]. */
  private readonly offered: Float64Array[];
  private readonly accepted: Float64Array[];
  /** Decayed tokens that rounds gave, and that the model expected of rounds that size, per kind. */
  private readonly delivered: Record<RoundKind, { actual: number; expected: number }> = {
    chain: { actual: 0, expected: 0 },
    tree: { actual: 0, expected: 0 },
  };

  constructor(
    private readonly costs: PolicyCosts,
    limit: Branching,
    options: TreePolicyOptions = {},
  ) {
    this.width = Math.max(1, limit.width);
    this.maxNodes = Math.min(limit.nodes, TREE_LIMITS.maxNodes);
    this.keep = 2 ** (-1 / (options.halfLife ?? 64));
    this.initialAlpha = options.initialAlpha ?? 0.7;
    this.offered = Array.from({ length: TREE_LIMITS.maxDepth }, () => new Float64Array(this.width));
    this.accepted = Array.from({ length: TREE_LIMITS.maxDepth }, () => new Float64Array(this.width));
  }

  /**
   * The prior of rank r: the favourite is accepted with the pair's α; a sibling takes a share of what the ones before
   * it leave, halving with each rank (greedy acceptances of siblings are exclusive, so they sum to at most 1).
   */
  private prior(rank: number): number {
    const alpha = this.costs.alpha ?? this.initialAlpha;
    return rank === 1 ? alpha : (1 - alpha) / 2 ** (rank - 1);
  }

  /**
   * Estimated acceptance of the rank-r child at depth d, as a table over every d and r (a choice asks thousands of
   * times): the depth's own trials, shrunk towards the rank's pool.
   */
  acceptances(): (depth: number, rank: number) => number {
    const depths = this.offered.length;
    const table = new Float64Array(depths * this.width);
    for (let r = 0; r < this.width; r++) {
      let pooledOffered = PRIOR_TRIALS;
      let pooledAccepted = PRIOR_TRIALS * this.prior(r + 1);
      for (let d = 0; d < depths; d++) {
        pooledOffered += this.offered[d][r];
        pooledAccepted += this.accepted[d][r];
      }
      const pooled = pooledAccepted / pooledOffered;
      for (let d = 0; d < depths; d++) {
        table[d * this.width + r] = (this.accepted[d][r] + POOL_TRIALS * pooled) / (this.offered[d][r] + POOL_TRIALS);
      }
    }
    return (depth, rank) =>
      rank > this.width || depth < 1 ? 0 : table[(Math.min(depth, depths) - 1) * this.width + rank - 1];
  }

  /** Tokens rounds of a kind gave per token the model expected of them. */
  calibration(kind: RoundKind): number {
    const { actual, expected } = this.delivered[kind];
    return (actual + CALIBRATION_TOKENS) / (expected + CALIBRATION_TOKENS);
  }

  /** Tokens the model expects of the best tree (width 1: the chain) of that depth, width and node count. */
  private expected(depth: number, width: number, nodes: number): number {
    const byNodes = expectedTokensByNodes(this.acceptances(), depth, width, nodes);
    return byNodes[byNodes.length - 1];
  }

  choose(k: number, maxDepth: number): TreeShape | undefined {
    if (k <= 0 || this.width < 2) return undefined;
    return bestTree(this.acceptances(), this.costs, {
      k,
      maxDepth,
      limit: { width: this.width, nodes: this.maxNodes },
      // Never above 1: a tree is trusted at most as far as the model says, however well trees have done.
      treeGain: Math.min(1, this.calibration("tree") / this.calibration("chain")),
    });
  }

  observeTree(tree: TokenTree, path: readonly number[], asked?: TreeShape): void {
    if (tree.tokens.length === 0 && !asked) return;
    // Judged against what was promised when the shape was chosen: a drafter that fills it poorly, or not at all,
    // gives less.
    const shape = asked ?? { ...treeExtent(tree), nodes: tree.tokens.length };
    this.deliver("tree", path.length + 1, this.expected(shape.depth, Math.min(shape.width, this.width), shape.nodes));
    // Each node on the path, the root first, offered its children in rank order; the accepted one (if any) is next.
    for (let step = 0; step <= path.length; step++) {
      const parent = step === 0 ? ROOT : path[step - 1];
      const next = path[step];
      let rank = 0;
      for (let node = parent + 1; node < tree.parents.length; node++) {
        if (tree.parents[node] !== parent) continue;
        rank++;
        if (rank > this.width) break;
        this.trial(tree.depths[node], rank, node === next);
      }
    }
  }

  observeChain(k: number, proposed: number, accepted: number): void {
    if (k === 0) return;
    this.deliver("chain", accepted + 1, this.expected(k, 1, k));
    for (let depth = 1; depth <= Math.min(proposed, accepted + 1); depth++) this.trial(depth, 1, depth <= accepted);
  }

  /** A round's tokens against the model's expectation before it learns from the round; every count decays. */
  private deliver(kind: RoundKind, actual: number, expected: number): void {
    for (const row of [...this.offered, ...this.accepted]) for (let r = 0; r < row.length; r++) row[r] *= this.keep;
    for (const sums of Object.values(this.delivered)) {
      sums.actual *= this.keep;
      sums.expected *= this.keep;
    }
    this.delivered[kind].actual += actual;
    this.delivered[kind].expected += expected;
  }

  private trial(depth: number, rank: number, accepted: boolean): void {
    if (depth > TREE_LIMITS.maxDepth) return;
    this.offered[depth - 1][rank - 1] += 1;
    if (accepted) this.accepted[depth - 1][rank - 1] += 1;
  }
}
