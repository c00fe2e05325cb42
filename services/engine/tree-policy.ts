/**
 * Tree shape policy: whether a round drafts a tree, and how wide and how many nodes. A tree pays when the tokens its
 * extra nodes are expected to add outweigh what verifying (and drafting) them costs, and both sides are measured: the
 * acceptance of each sibling rank at each depth, learnt from the rounds that ran, and the pair's verify cost curve
 * (CostModel, which on a GPU at batch 1 is nearly flat and on this CPU is not). Each round, every width up to the
 * limit is scored as the best tree of each node budget under those acceptances (as Sequoia and EAGLE-2 grow trees: the
 * nodes with the most probable paths), the chain among them, and the most expected tokens per millisecond wins. The
 * depth is the K policy's. Shared by the requests of one drafter/target pair, like CostModel. Pure: the loop passes
 * the outcomes in.
 */

import type { RoundCosts, RoundWork } from "./k-policy.ts";
import { ROOT, type TokenTree, TREE_LIMITS } from "./token-tree.ts";

/** How a round's tree branches: at most `width` children per node and `nodes` in all; undefined is the chain. */
export interface Branching {
  readonly width: number;
  readonly nodes: number;
}

export interface TreeShaper {
  /** The branching of a round `depth` deep (the K policy's K), undefined for a chain. */
  choose(depth: number): Branching | undefined;
  /** A tree round: the tree verified and the accepted path (node indices, root down). */
  observeTree(tree: TokenTree, path: readonly number[]): void;
  /** A chain round: `proposed` tokens, of which the first `accepted` were kept. */
  observeChain(proposed: number, accepted: number): void;
}

/** Always the same branching. */
export class FixedTreeShape implements TreeShaper {
  constructor(private readonly shape: Branching) {}
  choose(): Branching {
    return this.shape;
  }
  observeTree(): void {}
  observeChain(): void {}
}

/**
 * Draft cost of a tree in chain draft steps. A model drafter grows a tree one level per forward and feeds the root and
 * every node expanded so far again (model-drafter.ts), `1 + min(width·level, nodes)` positions at a level; the draft
 * model is assumed to price positions as the target's measured curve does. A chain (width 1) is `depth` steps.
 */
export function treeDraftSteps(depth: number, width: number, nodes: number, costs: RoundCosts): number {
  if (width <= 1) return depth;
  const one = costs.verifyMs(1);
  let steps = 0;
  for (let level = 0; level < depth; level++) steps += costs.verifyMs(1 + Math.min(width * level, nodes)) / one;
  return steps;
}

/** A tree round's work: the draft steps of a tree that deep and wide, and the root's position besides the nodes'. */
export function treeWork(tree: TokenTree, costs: RoundCosts): RoundWork {
  const nodes = tree.tokens.length;
  const counts = new Map<number, number>();
  for (const parent of tree.parents) counts.set(parent, (counts.get(parent) ?? 0) + 1);
  const width = Math.max(1, ...counts.values());
  return { draftSteps: treeDraftSteps(Math.max(0, ...tree.depths), width, nodes, costs), positions: nodes + 1 };
}

/** Expected tokens per millisecond of a round: its expected tokens over its draft and verify costs. */
function rate(tokens: number, depth: number, width: number, nodes: number, costs: RoundCosts): number {
  return tokens / (treeDraftSteps(depth, width, nodes, costs) * costs.draftStepMs + costs.verifyMs(nodes + 1));
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
  const open: { p: number; depth: number; parentP: number; rank: number }[] = [];
  const offer = (parentP: number, parentDepth: number, rank: number) => {
    if (parentDepth >= depth || rank > width) return;
    open.push({ p: parentP * accept(parentDepth + 1, rank), depth: parentDepth + 1, parentP, rank });
  };
  offer(1, 0, 1);
  while (expected.length <= maxNodes && open.length > 0) {
    let best = 0;
    for (let i = 1; i < open.length; i++) if (open[i].p > open[best].p) best = i;
    const [node] = open.splice(best, 1);
    if (node.p <= 0) break;
    expected.push(expected[expected.length - 1] + node.p);
    offer(node.p, node.depth, 1);
    offer(node.parentP, node.depth - 1, node.rank + 1);
  }
  return expected;
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

/**
 * Chooses each round's branching from measured acceptance per depth and sibling rank and the pair's measured costs.
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

  /** Estimated acceptance of the rank-r child at depth d: the depth's own trials, shrunk towards the rank's pool. */
  acceptance(depth: number, rank: number): number {
    if (rank > this.width || depth < 1) return 0;
    const d = Math.min(depth, TREE_LIMITS.maxDepth) - 1;
    let pooledOffered = PRIOR_TRIALS;
    let pooledAccepted = PRIOR_TRIALS * this.prior(rank);
    for (let i = 0; i < this.offered.length; i++) {
      pooledOffered += this.offered[i][rank - 1];
      pooledAccepted += this.accepted[i][rank - 1];
    }
    const pooled = pooledAccepted / pooledOffered;
    return (this.accepted[d][rank - 1] + POOL_TRIALS * pooled) / (this.offered[d][rank - 1] + POOL_TRIALS);
  }

  choose(depth: number): Branching | undefined {
    if (depth <= 0 || this.width < 2) return undefined;
    const accept = (d: number, r: number) => this.acceptance(d, r);
    const chain = expectedTokensByNodes(accept, depth, 1, depth);
    let best: Branching | undefined;
    let bestRate = rate(chain[chain.length - 1], depth, 1, depth, this.costs);
    // A tree has more nodes than the chain it replaces: fewer would be a shorter chain, the K policy's call.
    for (let width = 2; width <= this.width; width++) {
      const expected = expectedTokensByNodes(accept, depth, width, this.maxNodes);
      for (let nodes = depth + 1; nodes < expected.length; nodes++) {
        const r = rate(expected[nodes], depth, width, nodes, this.costs);
        if (r > bestRate) {
          best = { width, nodes };
          bestRate = r;
        }
      }
    }
    return best;
  }

  observeTree(tree: TokenTree, path: readonly number[]): void {
    this.decay();
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

  observeChain(proposed: number, accepted: number): void {
    this.decay();
    for (let depth = 1; depth <= Math.min(proposed, accepted + 1); depth++) this.trial(depth, 1, depth <= accepted);
  }

  private trial(depth: number, rank: number, accepted: boolean): void {
    if (depth > TREE_LIMITS.maxDepth) return;
    this.offered[depth - 1][rank - 1] += 1;
    if (accepted) this.accepted[depth - 1][rank - 1] += 1;
  }

  private decay(): void {
    for (const row of [...this.offered, ...this.accepted]) for (let r = 0; r < row.length; r++) row[r] *= this.keep;
  }
}
