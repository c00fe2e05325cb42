/**
 * A token tree: the candidates of one round of tree speculation (SpecInfer, Medusa, EAGLE). Every node is a draft
 * token that continues its parent; the root is the sequence's last committed token and is not part of the tree (the
 * verifier already holds it), just as a chain's draft tokens leave it out. A chain is the tree in which node i's
 * parent is node i − 1.
 *
 * Nodes are numbered in an order where a parent comes before its children. The target scores a tree in one forward
 * over 1 + size positions, its slots: slot 0 is the root, node i sits at slot i + 1 (`slotOf`), and logits row s is
 * the target's distribution over the children of the node at slot s. Pure, no I/O.
 */

import type { SparseDistribution } from "./sampling.ts";

/** The parent of the root's children. */
export const ROOT = -1;

export interface TokenTree {
  /** Node i's draft token. */
  readonly tokens: Int32Array;
  /** Node i's parent: ROOT or an earlier node. */
  readonly parents: Int32Array;
  /** Node i's depth: 1 for the root's children (the root is depth 0). */
  readonly depths: Int32Array;
  /** The q each node's token was drawn from, when the drafter sampled; absent for deterministic drafts. */
  readonly distributions?: readonly SparseDistribution[];
}

export interface TreeLimits {
  readonly maxNodes: number;
  readonly maxDepth: number;
}

/** 63 nodes make a forward of 64 positions (Medusa's largest tree); 16 levels are more than any anchor drafts. */
export const TREE_LIMITS: TreeLimits = { maxNodes: 63, maxDepth: 16 };

/** A tree that breaks the rules below; services answer it as INVALID_ARGUMENT. */
export class InvalidTreeError extends RangeError {
  override readonly name = "InvalidTreeError";
}

/** The slot of a node (ROOT included) among the forward's new positions. */
export function slotOf(node: number): number {
  return node + 1;
}

/** Depth of a node, ROOT included. */
export function depthOf(tree: TokenTree, node: number): number {
  return node === ROOT ? 0 : tree.depths[node];
}

/** A validated tree: equal lengths, token ids that fit int32, parents before children, within the limits. */
export function tokenTree(
  tokens: ArrayLike<number>,
  parents: ArrayLike<number>,
  distributions?: readonly SparseDistribution[],
  limits: TreeLimits = TREE_LIMITS,
): TokenTree {
  const size = tokens.length;
  const fail = (message: string): never => {
    throw new InvalidTreeError(`token tree: ${message}`);
  };
  if (parents.length !== size) fail(`${size} tokens but ${parents.length} parents`);
  if (size > limits.maxNodes) fail(`${size} nodes, more than the ${limits.maxNodes} allowed`);
  if (distributions !== undefined && distributions.length !== size) {
    fail(`${size} nodes but ${distributions.length} draft distributions`);
  }
  const depths = new Int32Array(size);
  for (let i = 0; i < size; i++) {
    const token = tokens[i];
    if (!Number.isInteger(token) || token < 0 || token > 0x7fffffff) fail(`node ${i} has token id ${token}`);
    const parent = parents[i];
    if (!Number.isInteger(parent) || parent < ROOT || parent >= i) {
      fail(`node ${i} has parent ${parent}: a parent is the root (${ROOT}) or an earlier node`);
    }
    depths[i] = parent === ROOT ? 1 : depths[parent] + 1;
    if (depths[i] > limits.maxDepth) fail(`node ${i} is at depth ${depths[i]}, deeper than ${limits.maxDepth}`);
  }
  return { tokens: Int32Array.from(tokens), parents: Int32Array.from(parents), depths, distributions };
}

/** The chain tokens[0] → tokens[1] → …: node i's parent is node i − 1. */
export function chainTree(tokens: readonly number[], distributions?: readonly SparseDistribution[]): TokenTree {
  const parents = tokens.map((_, i) => i - 1);
  return tokenTree(tokens, parents, distributions, { maxNodes: tokens.length, maxDepth: tokens.length });
}

/**
 * The wire form: flat `repeated uint32` arrays. A parent is sent as its slot (0 for the root, j + 1 for node j), so
 * every value is unsigned and a chain of K reads 0, 1, …, K − 1. Draft distributions travel beside it, one per node,
 * in their own wire form (proto/draft-distribution.ts).
 */
export interface TreeWire {
  readonly tokens: number[];
  readonly parents: number[];
}

export function encodeTree(tree: TokenTree): TreeWire {
  return { tokens: Array.from(tree.tokens), parents: Array.from(tree.parents, slotOf) };
}

/** Reads a tree off the wire, checking every rule; throws InvalidTreeError. */
export function decodeTree(
  wire: { readonly tokens: ArrayLike<number>; readonly parents: ArrayLike<number> },
  distributions?: readonly SparseDistribution[],
  limits: TreeLimits = TREE_LIMITS,
): TokenTree {
  const parents = Array.from(wire.parents, (slot, i) => {
    if (!Number.isInteger(slot) || slot < 0 || slot > i) {
      throw new InvalidTreeError(`token tree: node ${i} has parent slot ${slot}, not the root (0) or an earlier node`);
    }
    return slot - 1;
  });
  return tokenTree(wire.tokens, parents, distributions, limits);
}

/**
 * The tree's first nodes, up to the first one deeper than `maxDepth` and at most `maxNodes`: a tree within both whose
 * nodes keep their numbers (a path through it is a path through the whole tree). For trees grown level by level (the
 * model drafter's) these are the nodes down to `maxDepth`, the shallowest first when `maxNodes` cuts.
 */
export function treePrefix(tree: TokenTree, maxDepth: number, maxNodes = tree.tokens.length): TokenTree {
  const deeper = tree.depths.findIndex((depth) => depth > maxDepth);
  const size = Math.min(deeper < 0 ? tree.tokens.length : deeper, Math.max(0, maxNodes));
  if (size === tree.tokens.length) return tree;
  return {
    tokens: tree.tokens.subarray(0, size),
    parents: tree.parents.subarray(0, size),
    depths: tree.depths.subarray(0, size),
    ...(tree.distributions && { distributions: tree.distributions.slice(0, size) }),
  };
}

/** The children of a node (ROOT included), in node order. */
export function children(tree: TokenTree, node: number): number[] {
  const found: number[] = [];
  for (let i = node + 1; i < tree.parents.length; i++) if (tree.parents[i] === node) found.push(i);
  return found;
}

/** The nodes from the root's child down to `node` (empty for ROOT). */
export function pathTo(tree: TokenTree, node: number): number[] {
  const path: number[] = [];
  for (let n = node; n !== ROOT; n = tree.parents[n]) path.push(n);
  return path.reverse();
}

/** The tokens a path commits, in order. */
export function pathTokens(tree: TokenTree, path: readonly number[]): number[] {
  return path.map((node) => tree.tokens[node]);
}

/**
 * The tree's line of first children from the root (the drafter's favourites) and how much of it a path kept: what a
 * chain of the same drafter would have proposed, as far as the tree holds it, and kept.
 */
export function favouriteChain(tree: TokenTree, path: readonly number[]): { proposed: number; accepted: number } {
  let proposed = 0;
  for (let node = tree.parents.indexOf(ROOT); node >= 0; node = tree.parents.indexOf(node, node + 1)) proposed++;
  let accepted = 0;
  while (accepted < path.length && tree.parents.indexOf(tree.parents[path[accepted]]) === path[accepted]) accepted++;
  return { proposed, accepted };
}
