/**
 * How one Lookahead decoding forward is laid out (Fu et al. 2024, the two-dimensional mask of hao-ai-lab's
 * `j_make_causal_mask_multilevel`): the root (the last committed token), then the verification branch, then the
 * lookahead branch. The verification branch is the pool's candidate n-grams merged into a trie, a token tree
 * scored as trees are (tree-attention.ts), so it sits in the tree's slots and is verified by `verifyTree`. The
 * lookahead branch is a window of `levels` × W guesses from the Jacobi trajectory: the guess at (level l, column c)
 * stands for position root + 1 + c + l and sees the root, level 0's columns up to c, and its own column in levels
 * 1..l. Every token sees the cached past and only tokens before it in this order, which the runtime's mask requires.
 * Pure: the runtime lays these arrays into its ONNX inputs.
 */

import { ROOT, type TokenTree, tokenTree } from "./token-tree.ts";
import { slotCount, treeAttention } from "./tree-attention.ts";

/** The Jacobi window: levels (oldest first) of W guesses each. */
export type LookaheadWindow = readonly (readonly number[])[];

/**
 * The candidates merged into a trie (shared prefixes scored once), each cut to `maxDepth` tokens, nodes in order of
 * first appearance so that a candidate listed earlier wins a tie in greedy verification; at most `maxNodes` nodes.
 */
export function candidateTree(
  candidates: readonly (readonly number[])[],
  maxDepth: number,
  maxNodes: number,
): TokenTree {
  const tokens: number[] = [];
  const parents: number[] = [];
  const childOf = new Map<string, number>();
  for (const candidate of candidates) {
    let parent = ROOT;
    for (const token of candidate.slice(0, maxDepth)) {
      const key = `${parent}:${token}`;
      let node = childOf.get(key);
      if (node === undefined) {
        if (tokens.length === maxNodes) break;
        node = tokens.length;
        tokens.push(token);
        parents.push(parent);
        childOf.set(key, node);
      }
      parent = node;
    }
  }
  return tokenTree(tokens, parents, undefined, { maxNodes, maxDepth });
}

/** New positions the lookahead branch adds to a forward. */
export function branchSize(window: LookaheadWindow): number {
  return window.reduce((sum, level) => sum + level.length, 0);
}

/** The lookahead branch's tokens in forward order: level by level, column by column. */
export function branchTokens(window: LookaheadWindow): number[] {
  return window.flat();
}

/**
 * The runtime's attention input for a forward of `before` chain tokens (committed tokens the cache lacks), the root
 * and the tree's nodes, then the lookahead branch: row-major [n × n] visibility and per token its position after
 * the cached ones. Without a window it is exactly `treeAttention(tree, before)`.
 */
export function lookaheadAttention(
  tree: TokenTree,
  window: LookaheadWindow,
  before: number,
): { mask: Uint8Array; depths: Int32Array } {
  const treePart = treeAttention(tree, before);
  const head = before + slotCount(tree);
  const n = head + branchSize(window);
  const mask = new Uint8Array(n * n);
  for (let i = 0; i < head; i++) mask.set(treePart.mask.subarray(i * head, (i + 1) * head), i * n);
  const depths = new Int32Array(n);
  depths.set(treePart.depths);
  const width = window[0]?.length ?? 0;
  window.forEach((level, l) => {
    if (level.length !== width) throw new RangeError(`lookahead level ${l} has ${level.length} guesses, not ${width}`);
    for (let c = 0; c < width; c++) {
      const row = (head + l * width + c) * n;
      // The chain the cache lacks and the root.
      mask.fill(1, row, row + before + 1);
      // Level 0 up to this column, then this column in each level up to this one.
      mask.fill(1, row + head, row + head + c + 1);
      for (let k = 1; k <= l; k++) mask[row + head + k * width + c] = 1;
      depths[head + l * width + c] = before + 1 + c + l;
    }
  });
  return { mask, depths };
}
