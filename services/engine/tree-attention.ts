/**
 * How the target scores a token tree in one forward (Medusa, EAGLE, vLLM's tree attention): the root and the nodes
 * are the forward's new positions, in slot order (token-tree.ts); each may see the cached past, itself and its
 * ancestors, and sits at position pastLength + depth. After verification only the root and the accepted path keep
 * their keys and values, moved to contiguous cache slots. Pure: the runtime lays these arrays into its ONNX inputs.
 */

import { children, pathTo, slotOf, type TokenTree } from "./token-tree.ts";

/** Number of new positions a tree's forward scores: the root and every node. */
export function slotCount(tree: TokenTree): number {
  return tree.tokens.length + 1;
}

/**
 * The attention mask among the new positions, row-major [slots × slots]: 1 where the row's position may attend the
 * column's. Only this block is built: the cached past stays visible to every row. A chain gives the causal mask.
 */
export function treeMask(tree: TokenTree): Uint8Array {
  const slots = slotCount(tree);
  const mask = new Uint8Array(slots * slots);
  mask[0] = 1;
  for (let node = 0; node < tree.tokens.length; node++) {
    const row = slotOf(node) * slots;
    const parentRow = slotOf(tree.parents[node]) * slots;
    // A parent's row is complete before its children's (parents come first): it lists exactly the ancestors.
    mask.copyWithin(row, parentRow, parentRow + slots);
    mask[row + slotOf(node)] = 1;
  }
  return mask;
}

/**
 * The runtime's tree input for a forward of `before` chain tokens (committed tokens the cache lacks) followed by the
 * tree's slots: the chain is causal, every slot sees the whole chain, and the slots see each other as in `treeMask`.
 * `depths` are positions after the cached ones.
 */
export function treeAttention(tree: TokenTree, before: number): { mask: Uint8Array; depths: Int32Array } {
  const slots = slotCount(tree);
  const n = before + slots;
  const mask = new Uint8Array(n * n);
  const block = treeMask(tree);
  for (let i = 0; i < n; i++) mask.fill(1, i * n, i * n + Math.min(i + 1, before));
  for (let s = 0; s < slots; s++) mask.set(block.subarray(s * slots, (s + 1) * slots), (before + s) * n + before);
  const depths = new Int32Array(n);
  for (let i = 0; i < before; i++) depths[i] = i;
  depths.set(treePositions(tree, before), before);
  return { mask, depths };
}

/** Position id of each slot: pastLength (the cached positions before the root) + depth. */
export function treePositions(tree: TokenTree, pastLength: number): Int32Array {
  const positions = new Int32Array(slotCount(tree));
  positions[0] = pastLength;
  for (let node = 0; node < tree.tokens.length; node++) positions[slotOf(node)] = pastLength + tree.depths[node];
  return positions;
}

/** Every root-to-leaf path as node indices, leaves in node order (none for the empty tree). */
export function leafPaths(tree: TokenTree): number[][] {
  const paths: number[][] = [];
  for (let node = 0; node < tree.tokens.length; node++) {
    if (children(tree, node).length === 0) paths.push(pathTo(tree, node));
  }
  return paths;
}

/**
 * What survives verification in the cache. Positions are absolute: the root sat at pastLength, node i at
 * pastLength + i + 1. Copying `from[j]` to `to[j]` for j in order is safe in place, since from[j] > to[j] and each
 * destination lies below every later source; slots already where they belong are left out.
 */
export interface CompactionPlan {
  /** Slots of the forward whose keys and values are kept, in cache order: the root, then the accepted path. */
  readonly kept: Int32Array;
  readonly from: Int32Array;
  readonly to: Int32Array;
  /** Cache length afterwards: pastLength + 1 + path length (the appended token is not scored yet). */
  readonly length: number;
}

/** The compaction after accepting `path` (node indices from the root's child down, as in a TreeVerdict). */
export function compactionPlan(path: readonly number[], pastLength: number): CompactionPlan {
  const kept = Int32Array.from([0, ...path.map(slotOf)]);
  const moved = Array.from(kept.keys()).filter((j) => kept[j] !== j);
  return {
    kept,
    from: Int32Array.from(moved, (j) => pastLength + kept[j]),
    to: Int32Array.from(moved, (j) => pastLength + j),
    length: pastLength + kept.length,
  };
}
