/**
 * A drafter that runs a small causal LM with its own KV cache per sequence: the int4 draft, a cost-scaled draft, or
 * an early-exit model (the first layers of the target's own checkpoint, early-exit-drafter.ts). Proposals of many
 * sequences advance together, one batched forward per draft step.
 *
 * Trees grow as in EAGLE-2: per depth, the `width` most probable nodes by cumulative draft log-probability are
 * expanded into their `width` most probable children, and the best `nodes` candidates overall make the tree. When
 * sampling, an expanded node's children are instead `width` independent draws from its q, carried with the tree, and
 * all of them are kept up to `nodes`: multi-candidate speculative sampling is exact only for children drawn from q and
 * kept whatever their values (which nodes grow children may depend on the nodes' own scores). Each depth
 * is one tree forward over the root and every node expanded so far (the runtime's tree mask covers only the positions
 * of one forward, so earlier levels are fed again); the last forward's keys and values stay in the cache, and the
 * accepted path is compacted into place (`commitPath`).
 */
import type { CausalLM } from "../runtime/causal-lm.ts";
import { argmax } from "../runtime/greedy.ts";
import {
  type Draft,
  DraftHistory,
  type DraftRequest,
  type DraftSequence,
  type TreeDrafter,
  type TreeDraftRequest,
} from "./drafter.ts";
import { Stream, uniform } from "./rng.ts";
import {
  distribution,
  drawSparse,
  isGreedy,
  probabilityOf,
  type SamplingParams,
  type SparseDistribution,
  sparse,
} from "./sampling.ts";
import { ROOT, type TokenTree, TREE_LIMITS, tokenTree } from "./token-tree.ts";
import { treeMask } from "./tree-attention.ts";

export interface ModelDrafterOptions {
  /**
   * Reshapes each q before the draft token is drawn from it, e.g. to the fixed-point form that travels on the wire:
   * the token must be drawn from exactly the q the target will divide by.
   */
  readonly quantise?: (q: SparseDistribution) => SparseDistribution;
}

/** A node while a tree grows: parents are earlier candidates of the same tree. */
interface Candidate {
  readonly token: number;
  readonly parent: number;
  readonly depth: number;
  /** Cumulative draft log-probability from the root. */
  readonly score: number;
  /** The q the token was drawn from (sampled trees only). */
  readonly q?: SparseDistribution;
}

/** What the cache holds after a tree was drafted: `base` committed positions, then the root and `slots` nodes. */
interface GrownTree {
  readonly base: number;
  /** Per node of the proposed tree, its slot in the cache after `base` (the root is slot 0), or −1 if never fed. */
  readonly slots: Int32Array;
}

/** The `count` most probable tokens of a distribution, ties by lower id, as [token, log-probability]. */
export function topTokens(probs: Float32Array, count: number): [number, number][] {
  const best: [number, number][] = [];
  for (let id = 0; id < probs.length; id++) {
    const p = probs[id];
    if (p <= 0 || (best.length === count && p <= best[count - 1][1])) continue;
    let at = best.length;
    while (at > 0 && best[at - 1][1] < p) at--;
    best.splice(at, 0, [id, p]);
    if (best.length > count) best.pop();
  }
  return best.map(([id, p]) => [id, Math.log(p)]);
}

/** Candidates ranked best first: higher score, then shallower (so a parent precedes a child of equal score), then older. */
function ranked(candidates: readonly Candidate[], among: readonly number[]): number[] {
  return [...among].sort(
    (a, b) => candidates[b].score - candidates[a].score || candidates[a].depth - candidates[b].depth || a - b,
  );
}

/** The tree over candidates `chosen` (ascending, ancestor-closed), parents mapped to positions in `chosen`. */
function treeOf(candidates: readonly Candidate[], chosen: readonly number[]): TokenTree {
  const index = new Map(chosen.map((c, i) => [c, i]));
  const qs = chosen.map((c) => candidates[c].q);
  return tokenTree(
    chosen.map((c) => candidates[c].token),
    chosen.map((c) => (candidates[c].parent === ROOT ? ROOT : (index.get(candidates[c].parent) as number))),
    qs.every((q) => q !== undefined) && qs.length > 0 ? qs : undefined,
    { maxNodes: chosen.length, maxDepth: chosen.length },
  );
}

export class ModelDrafter implements TreeDrafter {
  private readonly sequences = new DraftHistory();
  private readonly grown = new Map<string, GrownTree>();

  constructor(
    private readonly model: CausalLM,
    readonly name: string,
    private readonly options: ModelDrafterOptions = {},
  ) {}

  async open(sequence: DraftSequence): Promise<void> {
    const { sequenceId, history } = sequence;
    this.sequences.open(sequence);
    this.model.release(sequenceId);
    // Prefill all but the last token now, so the first proposal costs what every later one does.
    if (history.length > 1) await this.model.forward([{ sequenceId, tokens: this.embeddable(history.slice(0, -1)) }]);
  }

  /** Tokens of the history the cache lacks (at least one, so the step has logits to read). */
  private pending(sequenceId: string, history: readonly number[]): number[] {
    const cached = Math.max(0, Math.min(this.model.sequenceLength(sequenceId), history.length - 1));
    if (this.model.sequenceLength(sequenceId) > cached) this.model.truncate(sequenceId, cached);
    return this.embeddable(history.slice(cached));
  }

  /**
   * A target with a wider vocabulary can commit ids the draft model has no embedding for; they are fed as id 0. That
   * only worsens the draft's guesses, and verification keeps the output exact whatever the draft proposes.
   */
  private embeddable(tokens: number[]): number[] {
    const vocab = this.model.info.vocabSize;
    return tokens.map((t) => (t < vocab ? t : 0));
  }

  async propose(batch: readonly DraftRequest[]): Promise<Draft[]> {
    const work = batch.map(({ sequenceId, k }) => {
      const entry = this.sequences.get(sequenceId);
      entry.proposal = [];
      // The cache must hold history + k − 1 tokens after the last step.
      const room = this.model.info.contextLength - entry.history.length + 1;
      return {
        sequenceId,
        entry,
        k: Math.max(0, Math.min(k, room)),
        feed: [] as number[],
        q: [] as SparseDistribution[],
      };
    });
    for (const w of work) if (w.k > 0) w.feed = this.pending(w.sequenceId, w.entry.history);
    for (;;) {
      const active = work.filter((w) => w.entry.proposal.length < w.k);
      if (active.length === 0) break;
      const logits = await this.model.forward(active.map((w) => ({ sequenceId: w.sequenceId, tokens: w.feed })));
      const vocab = this.model.info.vocabSize;
      active.forEach((w, i) => {
        const rows = logits[i];
        const last = rows.subarray(rows.length - vocab);
        const { sampling, seed } = w.entry.open;
        let token: number;
        if (isGreedy(sampling)) {
          token = argmax(last);
        } else {
          const support = sparse(distribution(last, sampling));
          const q = this.options.quantise ? this.options.quantise(support) : support;
          const position = w.entry.history.length + w.entry.proposal.length;
          token = drawSparse(q, uniform(seed, position, Stream.draft));
          w.q.push(q);
        }
        w.entry.proposal.push(token);
        w.feed = [token];
      });
    }
    return work.map((w) =>
      isGreedy(w.entry.open.sampling)
        ? { tokens: [...w.entry.proposal] }
        : { tokens: [...w.entry.proposal], distributions: w.q },
    );
  }

  /**
   * Draft distribution a tree ranks children by: the request's sampling (so that tokens the target can never emit are
   * not drafted), or the plain softmax when greedy.
   */
  private treeDistribution(logits: Float32Array, sampling: SamplingParams): Float32Array {
    return distribution(logits, isGreedy(sampling) ? { temperature: 1 } : sampling);
  }

  async proposeTrees(batch: readonly TreeDraftRequest[]): Promise<TokenTree[]> {
    const vocab = this.model.info.vocabSize;
    const work = batch.map(({ sequenceId, shape }) => {
      const entry = this.sequences.get(sequenceId);
      entry.proposal = [];
      entry.tree = undefined;
      this.grown.delete(sequenceId);
      // The last forward caches history + the expanded nodes: fewer than `nodes`, and never past the context.
      const room = this.model.info.contextLength - entry.history.length;
      const nodes = Math.max(0, Math.min(shape.nodes, TREE_LIMITS.maxNodes, room));
      const depth = nodes > 0 ? Math.max(0, Math.min(shape.depth, TREE_LIMITS.maxDepth)) : 0;
      return {
        sequenceId,
        entry,
        depth,
        width: Math.max(1, shape.width),
        nodes,
        room,
        base: entry.history.length - 1,
        root: 0,
        candidates: [] as Candidate[],
        /** Candidates fed to the model (the frontiers so far), in candidate order. */
        expanded: [] as number[],
        frontier: [ROOT],
      };
    });
    const growing = work.filter((w) => w.depth > 0);
    // Bring each cache to all but the last committed token, which is the root of every forward below.
    const catchUp = growing
      .map((w) => ({ w, feed: this.pending(w.sequenceId, w.entry.history) }))
      .filter(({ w, feed }) => {
        w.root = feed[feed.length - 1];
        return feed.length > 1;
      });
    if (catchUp.length > 0) {
      await this.model.forward(catchUp.map(({ w, feed }) => ({ sequenceId: w.sequenceId, tokens: feed.slice(0, -1) })));
    }
    for (let level = 0; ; level++) {
      const active = growing.filter((w) => level < w.depth && w.frontier.length > 0);
      if (active.length === 0) break;
      const logits = await this.model.forward(
        active.map((w) => {
          this.model.truncate(w.sequenceId, w.base);
          const fed = treeOf(w.candidates, w.expanded);
          return {
            sequenceId: w.sequenceId,
            tokens: [w.root, ...fed.tokens],
            tree: { mask: treeMask(fed), depths: [0, ...fed.depths] },
          };
        }),
      );
      active.forEach((w, i) => {
        const fresh: number[] = [];
        const { sampling, seed } = w.entry.open;
        for (const node of w.frontier) {
          const slot = node === ROOT ? 0 : w.expanded.indexOf(node) + 1;
          const row = logits[i].subarray(slot * vocab, (slot + 1) * vocab);
          const parentScore = node === ROOT ? 0 : w.candidates[node].score;
          const depth = node === ROOT ? 1 : w.candidates[node].depth + 1;
          if (isGreedy(sampling)) {
            for (const [token, logp] of topTokens(this.treeDistribution(row, sampling), w.width)) {
              fresh.push(w.candidates.length);
              w.candidates.push({ token, parent: node, depth, score: parentScore + logp });
            }
            continue;
          }
          const support = sparse(distribution(row, sampling));
          const q = this.options.quantise ? this.options.quantise(support) : support;
          // Draws keyed by position and a lane per draw at that depth: no two nodes share a random number.
          const position = w.base + depth;
          for (let c = 0; c < w.width && w.candidates.length < w.nodes; c++) {
            const token = drawSparse(q, uniform(seed, position, Stream.draft, fresh.length));
            fresh.push(w.candidates.length);
            w.candidates.push({
              token,
              parent: node,
              depth,
              score: parentScore + Math.log(probabilityOf(q, token)),
              q,
            });
          }
        }
        // Only the best of the new level grow further, and never more than the tree can hold.
        const grows = Math.min(w.width, w.nodes, w.room - w.expanded.length);
        w.frontier = level + 1 < w.depth ? ranked(w.candidates, fresh).slice(0, Math.max(0, grows)) : [];
        w.frontier.sort((a, b) => a - b);
        w.expanded.push(...w.frontier);
      });
    }
    return work.map((w) => {
      const all = w.candidates.map((_, i) => i);
      const chosen = ranked(w.candidates, all)
        .slice(0, w.nodes)
        .sort((a, b) => a - b);
      const tree = treeOf(w.candidates, chosen);
      w.entry.tree = tree;
      if (w.depth > 0) {
        // The last forward fed the root and every expanded node; the leaves of the last level were never fed.
        const slots = Int32Array.from(chosen, (c) => w.expanded.indexOf(c) + 1 || -1);
        this.grown.set(w.sequenceId, { base: w.base, slots });
      }
      return tree;
    });
  }

  commit(sequenceId: string, length: number, tokens: readonly number[]): void {
    this.grown.delete(sequenceId);
    this.sequences.commit(sequenceId, length, tokens);
    if (this.model.sequenceLength(sequenceId) > length) this.model.truncate(sequenceId, length);
  }

  commitPath(sequenceId: string, path: readonly number[], token: number): void {
    this.sequences.commitPath(sequenceId, path, token);
    const grown = this.grown.get(sequenceId);
    if (!grown) return;
    this.grown.delete(sequenceId);
    // Keep the root and the accepted nodes the cache holds; a path past them is fed with the next proposal.
    const kept = [0];
    for (const node of path) {
      if (grown.slots[node] < 0) break;
      kept.push(grown.slots[node]);
    }
    this.model.compact(sequenceId, grown.base, kept);
  }

  close(sequenceId: string): void {
    this.grown.delete(sequenceId);
    this.sequences.close(sequenceId);
    this.model.release(sequenceId);
  }

  cacheBytes(sequenceId?: string): number {
    return this.model.cacheBytes(sequenceId);
  }
}
