/**
 * Lookahead decoding (Fu et al. 2024) as a round step of one sequence: the target drafts for itself. Each round's
 * ONE forward scores the root, a verification branch of up to G candidate n-grams from the pool that start with the
 * root's token, and a lookahead branch of Jacobi guesses (lookahead-layout.ts). The verification branch is verified
 * as a token tree (greedy, or lossless speculative sampling with the candidates as deterministic drafts); the
 * lookahead branch's outputs advance the Jacobi window by one iteration, and each column's trajectory, read down the
 * levels, gives one n-gram for the pool. The pool is seeded from the prompt and also learns the committed text.
 *
 * Lossless under sampling too: the candidates are a function of the committed history alone (the Jacobi branch
 * always takes the argmax), never of the random draws that decide this round's positions, so multi-candidate
 * speculative sampling with q = 1 on each candidate token (tree-verify.ts) emits the target's distribution.
 *
 * Pure apart from its own state: the loop (generate.ts, later a replica) runs the forward between `plan` and
 * `settle`.
 */

import { argmax } from "../runtime/greedy.ts";
import { branchSize, candidateTree, type LookaheadWindow } from "./lookahead-layout.ts";
import { NgramPool } from "./ngram-pool.ts";
import type { TokenTree } from "./token-tree.ts";

export interface LookaheadConfig {
  /** W: Jacobi guesses per level, the positions the lookahead branch looks ahead. */
  readonly window: number;
  /** N: n-gram size. The window keeps N − 1 levels and a candidate is N − 1 tokens after the root. */
  readonly ngram: number;
  /** G: candidate n-grams verified per round at most (also the continuations the pool keeps per first token). */
  readonly candidates: number;
}

/** Bounds on (W, N, G): a forward scores up to 1 + W·(N − 1) + G·(N − 1) positions. */
export const LOOKAHEAD_LIMITS = { maxWindow: 16, maxNgram: 8, maxCandidates: 16 } as const;

/** (W, N, G) as measured on this CPU (bench/RESULTS.md, the Lookahead sweep). */
export const DEFAULT_LOOKAHEAD: LookaheadConfig = { window: 4, ngram: 3, candidates: 4 };

/** Checks a configuration; throws a RangeError naming the bad field. */
export function lookaheadConfig(config: LookaheadConfig): LookaheadConfig {
  const check = (name: string, value: number, min: number, max: number) => {
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(`lookahead ${name} must be an integer in [${min}, ${max}], got ${value}`);
    }
  };
  check("window (W)", config.window, 1, LOOKAHEAD_LIMITS.maxWindow);
  check("ngram (N)", config.ngram, 2, LOOKAHEAD_LIMITS.maxNgram);
  check("candidates (G)", config.candidates, 1, LOOKAHEAD_LIMITS.maxCandidates);
  return config;
}

/** What one round scores beside the root: the candidates' trie and the Jacobi window (empty when out of room). */
export interface LookaheadPlan {
  readonly tree: TokenTree;
  readonly window: LookaheadWindow;
}

/** One sequence's Lookahead state: its n-gram pool and Jacobi window. */
export class LookaheadSequence {
  readonly pool: NgramPool;
  /** Levels of W guesses, oldest first; fewer than N − 1 while the window fills. */
  #levels: number[][];

  constructor(
    readonly config: LookaheadConfig,
    history: readonly number[],
  ) {
    lookaheadConfig(config);
    this.pool = new NgramPool(config.ngram, config.candidates);
    this.pool.addText(history);
    // The first guesses only start the iteration (Jacobi converges from any): the history's last W tokens.
    const seed = history.length > 0 ? history : [0];
    const from = seed.length - (config.window % seed.length);
    this.#levels = [Array.from({ length: config.window }, (_, c) => seed[(from + c) % seed.length])];
  }

  get window(): LookaheadWindow {
    return this.#levels;
  }

  /**
   * The round after committed token `root`: candidates cut to `depth` tokens (the round's K), and the window, within
   * `room` new positions beside the root (the cache's room in the context). Without room for the window the round
   * verifies candidates only.
   */
  plan(root: number, depth: number, room: number): LookaheadPlan {
    const candidates = this.pool.continuations(root).slice(0, this.config.candidates);
    const windowFits = branchSize(this.#levels) + Math.min(depth, this.config.ngram - 1) * candidates.length <= room;
    const window = windowFits ? this.#levels : [];
    const tree = candidateTree(candidates, depth, Math.max(0, room - branchSize(window)));
    return { tree, window };
  }

  /**
   * After the forward: `branchLogits` are the target's rows for `plan.window` (row-major, forward order), `history`
   * the committed tokens after the round, of which the last `added` are new. Advances the window one Jacobi
   * iteration and feeds the pool.
   */
  settle(
    plan: LookaheadPlan,
    branchLogits: Float32Array,
    vocabSize: number,
    history: readonly number[],
    added: number,
  ): void {
    const { ngram } = this.config;
    this.pool.addText(history.slice(Math.max(0, history.length - added - ngram + 1)));
    const levels = plan.window;
    if (levels.length === 0) return;
    const width = levels[0].length;
    if (branchLogits.length !== branchSize(levels) * vocabSize) {
      throw new RangeError(`lookahead: ${branchLogits.length} logits for a window of ${branchSize(levels)} guesses`);
    }
    const top = (levels.length - 1) * width;
    const next = Array.from({ length: width }, (_, c) =>
      argmax(branchLogits.subarray((top + c) * vocabSize, (top + c + 1) * vocabSize)),
    );
    if (levels.length === ngram - 1) {
      for (let c = 0; c < width; c++) this.pool.add([...levels.map((level) => level[c]), next[c]]);
      this.#levels = [...levels.slice(1).map((level) => [...level]), next];
    } else {
      this.#levels = [...levels.map((level) => [...level]), next];
    }
  }
}

export interface LookaheadSwitchOptions {
  /** Rounds run each way before the first comparison. */
  readonly trials?: number;
  /** While one way wins, every this many rounds the other runs once, so that a change of load or text is noticed. */
  readonly probeEvery?: number;
  /** Weight of a new round in the moving averages. */
  readonly weight?: number;
}

/**
 * Whether Lookahead pays on this machine and text: rounds with it (a forward of 1 + W·(N − 1) + candidates
 * positions) and without it (plain decoding, one position) compared by measured milliseconds per token. On a CPU
 * where many positions cost several times one, plain decoding may win. Shared by the requests of one target, like
 * CostModel; pure: the loop passes the measurements in.
 */
export class LookaheadSwitch {
  readonly #trials: number;
  readonly #probeEvery: number;
  readonly #weight: number;
  /** Per way (off, on): rounds observed and the moving averages of tokens and ms per round. */
  readonly #arms = [false, true].map(() => ({ rounds: 0, tokens: 0, ms: 0 }));
  #round = 0;

  constructor(options: LookaheadSwitchOptions = {}) {
    this.#trials = options.trials ?? 4;
    this.#probeEvery = options.probeEvery ?? 16;
    this.#weight = options.weight ?? 0.2;
  }

  /** Milliseconds per token each way has taken so far (Infinity before its first round). */
  msPerToken(on: boolean): number {
    const arm = this.#arms[Number(on)];
    return arm.tokens > 0 ? arm.ms / arm.tokens : Number.POSITIVE_INFINITY;
  }

  /** Whether the next round runs Lookahead. */
  on(): boolean {
    this.#round++;
    const [off, on] = this.#arms;
    if (on.rounds < this.#trials) return true;
    if (off.rounds < this.#trials) return false;
    const better = this.msPerToken(true) <= this.msPerToken(false);
    return this.#round % this.#probeEvery === 0 ? !better : better;
  }

  /** A round ran with Lookahead `on` or off: its sequences gained `tokensPerSequence` tokens each in `ms`. */
  observe(on: boolean, tokensPerSequence: number, ms: number): void {
    const arm = this.#arms[Number(on)];
    const w = arm.rounds === 0 ? 1 : this.#weight;
    arm.tokens += w * (tokensPerSequence - arm.tokens);
    arm.ms += w * (ms - arm.ms);
    arm.rounds++;
  }
}
