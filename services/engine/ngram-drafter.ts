/**
 * Prompt lookup (Saxena 2023): propose the tokens that followed the most recent earlier occurrence of the sequence's
 * last n tokens in its prompt and generated text, trying the longest n first. As a tree it offers the continuations
 * of several occurrences as siblings, merged where they share a prefix. No model: its drafts are deterministic, so in
 * sampling mode each proposal's q is one-hot (acceptance then happens with probability p(x)).
 */
import {
  type Draft,
  DraftHistory,
  type DraftRequest,
  type DraftSequence,
  type TreeDrafter,
  type TreeDraftRequest,
  type TreeShape,
} from "./drafter.ts";
import { isGreedy, oneHot } from "./sampling.ts";
import { ROOT, type TokenTree, tokenTree } from "./token-tree.ts";

export interface NgramDrafterOptions {
  /** Longest and shortest suffix length to look up. */
  readonly maxNgram?: number;
  readonly minNgram?: number;
}

/** The continuation (up to k tokens) after the latest earlier occurrence of the last n tokens, or [] if none. */
export function lookupContinuation(history: readonly number[], n: number, k: number): number[] {
  return lookupContinuations(history, n, k, 1)[0] ?? [];
}

/** The continuations (up to k tokens each) after the `limit` latest earlier occurrences of the last n tokens. */
export function lookupContinuations(history: readonly number[], n: number, k: number, limit: number): number[][] {
  const end = history.length;
  const found: number[][] = [];
  if (n <= 0 || end <= n || k <= 0) return found;
  for (let start = end - n - 1; start >= 0 && found.length < limit; start--) {
    let match = true;
    for (let j = 0; j < n; j++) {
      if (history[start + j] !== history[end - n + j]) {
        match = false;
        break;
      }
    }
    if (match) found.push(history.slice(start + n, Math.min(start + n + k, end)));
  }
  return found;
}

/**
 * The trie of continuations, in the order given (earlier ones keep their nodes first), within the shape: a branch
 * past `width` siblings or the node budget is cut where it would grow the tree beyond them.
 */
export function continuationTree(continuations: readonly (readonly number[])[], shape: TreeShape): TokenTree {
  const tokens: number[] = [];
  const parents: number[] = [];
  const childrenOf = new Map<number, number[]>();
  for (const continuation of continuations) {
    let node = ROOT;
    for (const token of continuation.slice(0, shape.depth)) {
      const siblings = childrenOf.get(node) ?? [];
      const existing = siblings.find((child) => tokens[child] === token);
      if (existing !== undefined) {
        node = existing;
        continue;
      }
      if (tokens.length >= shape.nodes || siblings.length >= shape.width) break;
      tokens.push(token);
      parents.push(node);
      childrenOf.set(node, [...siblings, tokens.length - 1]);
      node = tokens.length - 1;
    }
  }
  return tokenTree(tokens, parents);
}

export class NgramDrafter implements TreeDrafter {
  readonly name = "ngram";
  private readonly sequences = new DraftHistory();
  private readonly maxNgram: number;
  private readonly minNgram: number;

  constructor(options: NgramDrafterOptions = {}) {
    this.maxNgram = options.maxNgram ?? 3;
    this.minNgram = options.minNgram ?? 1;
  }

  async open(sequence: DraftSequence): Promise<void> {
    this.sequences.open(sequence);
  }

  async propose(batch: readonly DraftRequest[]): Promise<Draft[]> {
    return batch.map(({ sequenceId, k }) => {
      const entry = this.sequences.get(sequenceId);
      let tokens: number[] = [];
      for (let n = this.maxNgram; k > 0 && n >= this.minNgram && tokens.length === 0; n--) {
        tokens = lookupContinuation(entry.history, n, k);
      }
      entry.proposal = tokens;
      return isGreedy(entry.open.sampling) ? { tokens } : { tokens, distributions: tokens.map(oneHot) };
    });
  }

  async proposeTrees(batch: readonly TreeDraftRequest[]): Promise<TokenTree[]> {
    return batch.map(({ sequenceId, shape }) => {
      const entry = this.sequences.get(sequenceId);
      // Longer matches first: they predict better. Each n contributes up to `width` occurrences.
      const continuations: number[][] = [];
      for (let n = this.maxNgram; n >= this.minNgram; n--) {
        continuations.push(...lookupContinuations(entry.history, n, shape.depth, shape.width));
      }
      entry.proposal = [];
      entry.tree = continuationTree(continuations, shape);
      return entry.tree;
    });
  }

  commit(sequenceId: string, length: number, tokens: readonly number[]): void {
    this.sequences.commit(sequenceId, length, tokens);
  }

  commitPath(sequenceId: string, path: readonly number[], token: number): void {
    this.sequences.commitPath(sequenceId, path, token);
  }

  close(sequenceId: string): void {
    this.sequences.close(sequenceId);
  }

  cacheBytes(): number {
    return 0;
  }
}
