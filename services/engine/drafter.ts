/**
 * The drafter interface: anything that proposes the next K tokens of a sequence. Implementations: model-drafter.ts
 * (a small model, also used for early exit), ngram-drafter.ts (prompt lookup), medusa-drafter.ts (the target's own
 * heads, in process). Batched over sequences so a draft service can serve many sequences per forward. All also propose
 * token trees (`TreeDrafter`).
 */
import type { SamplingParams, SparseDistribution } from "./sampling.ts";
import { pathTokens, type TokenTree } from "./token-tree.ts";

export interface DraftSequence {
  readonly sequenceId: string;
  /** Every committed token (prompt and generated so far). */
  readonly history: readonly number[];
  /** The request's sampling; a drafter samples its proposals with the same parameters. */
  readonly sampling: SamplingParams;
  /** The request's seed (rng.ts): draft draws are keyed by (seed, position, draft stream). */
  readonly seed: number;
}

export interface DraftRequest {
  readonly sequenceId: string;
  /** Tokens wanted; 0 is allowed and costs nothing. */
  readonly k: number;
}

export interface Draft {
  /** Up to k proposed tokens (a drafter may propose fewer, even none). */
  readonly tokens: number[];
  /** When sampling (temperature > 0): the distribution each token was drawn from, for lossless verification. */
  readonly distributions?: SparseDistribution[];
}

export interface Drafter {
  /** The drafter's name as requests and statistics spell it. */
  readonly name: string;
  /** Starts (or restarts, replacing any state) a sequence with its history. */
  open(sequence: DraftSequence): Promise<void>;
  /** Proposes continuations for many sequences at once; results in request order. */
  propose(batch: readonly DraftRequest[]): Promise<Draft[]>;
  /**
   * After verification: keep the first `length` tokens of history + the last proposal (rolling back rejected draft
   * tokens), then append `tokens` (the target's correction or bonus token).
   */
  commit(sequenceId: string, length: number, tokens: readonly number[]): void;
  /** Forgets the sequence and frees what it held. Unknown ids are ignored. */
  close(sequenceId: string): void;
  /** Bytes held for one sequence, or for all when no id is given (0 for drafters without caches). */
  cacheBytes(sequenceId?: string): number;
}

/** The size of a tree to draft: at most `nodes` nodes, `depth` levels, `width` children per node. */
export interface TreeShape {
  readonly depth: number;
  readonly width: number;
  readonly nodes: number;
}

export interface TreeDraftRequest {
  readonly sequenceId: string;
  /** A shape with no depth or no nodes asks for the empty tree, at no cost. */
  readonly shape: TreeShape;
}

/**
 * A drafter that also proposes token trees. Deterministic trees (greedy requests; prompt lookup always) carry no draft
 * distributions: their nodes are functions of the history, which multi-candidate verification treats as q = 1 on the
 * drafted token. A sampled tree (the model drafter when sampling) carries each node's q, every sibling drawn from it
 * independently (tree-verify.ts).
 */
export interface TreeDrafter extends Drafter {
  proposeTrees(batch: readonly TreeDraftRequest[]): Promise<TokenTree[]>;
  /** After verifying the last tree: append the tokens of the accepted `path` (node indices, root down), then `token`. */
  commitPath(sequenceId: string, path: readonly number[], token: number): void;
}

export function isTreeDrafter(drafter: Drafter): drafter is TreeDrafter {
  return "proposeTrees" in drafter && "commitPath" in drafter;
}

interface DraftEntry {
  history: number[];
  /** The last chain proposal, or the last tree (never both). */
  proposal: number[];
  tree?: TokenTree;
  open: DraftSequence;
}

/** Per-sequence bookkeeping every drafter shares: the committed history and the last proposal. */
export class DraftHistory {
  private readonly sequences = new Map<string, DraftEntry>();

  open(sequence: DraftSequence): void {
    this.sequences.set(sequence.sequenceId, { history: [...sequence.history], proposal: [], open: sequence });
  }

  get(sequenceId: string): DraftEntry {
    const entry = this.sequences.get(sequenceId);
    if (!entry) throw new Error(`drafter: unknown sequence ${sequenceId}`);
    return entry;
  }

  /** Applies a commit and returns the new history. */
  commit(sequenceId: string, length: number, tokens: readonly number[]): number[] {
    const entry = this.get(sequenceId);
    const combined = entry.history.concat(entry.proposal);
    if (length < 0 || length > combined.length) {
      throw new Error(`drafter: cannot keep ${length} of ${combined.length} tokens of sequence ${sequenceId}`);
    }
    entry.history = combined.slice(0, length).concat(tokens);
    entry.proposal = [];
    entry.tree = undefined;
    return entry.history;
  }

  /** Applies a path commit after a tree proposal and returns the new history. */
  commitPath(sequenceId: string, path: readonly number[], token: number): number[] {
    const entry = this.get(sequenceId);
    const { tree } = entry;
    if (!tree && path.length > 0) throw new Error(`drafter: sequence ${sequenceId} has no tree to commit a path of`);
    const tokens = tree ? pathTokens(tree, path) : [];
    entry.history = entry.history.concat(tokens, [token]);
    entry.proposal = [];
    entry.tree = undefined;
    return entry.history;
  }

  close(sequenceId: string): boolean {
    return this.sequences.delete(sequenceId);
  }

  ids(): IterableIterator<string> {
    return this.sequences.keys();
  }
}
