/**
 * Verification of one round: given the K draft tokens and the target's logits at the K+1 positions they open, decide
 * how many draft tokens to keep and which token the target adds (the correction at the first rejection, or the bonus
 * after all K). Pure: the target service calls this on rows of a batched forward, wherever the draft was made.
 */

import { argmax } from "../runtime/greedy.ts";
import { Stream, uniform } from "./rng.ts";
import {
  distribution,
  drawToken,
  isGreedy,
  probabilityOf,
  type SamplingParams,
  type SparseDistribution,
} from "./sampling.ts";

/**
 * How draft tokens are judged.
 * - `lossless`: greedy verification at temperature 0, speculative sampling otherwise. Output distribution is exactly
 *   the target's.
 * - `top-k` (LOSSY): accept a draft token that is among the target's k most probable tokens.
 * - `typical` (LOSSY): accept a draft token whose target probability exceeds min(epsilon, delta·exp(−H(p)))
 *   (Cai et al., Medusa). Both lossy modes trade exactness for longer accepted runs and are opt-in only.
 */
export type AcceptanceMode =
  | { readonly kind: "lossless" }
  | { readonly kind: "top-k"; readonly k: number }
  | { readonly kind: "typical"; readonly epsilon: number; readonly delta: number };

export const LOSSLESS: AcceptanceMode = { kind: "lossless" };

export function isLossy(mode: AcceptanceMode): boolean {
  return mode.kind !== "lossless";
}

/** The outcome of a round: keep draft[0..accepted), then append `token`. */
export interface Verdict {
  readonly accepted: number;
  readonly token: number;
}

/** Greedy verification from the target's argmax at each of the K+1 positions. */
export function acceptGreedy(draft: readonly number[], targetArgmax: (row: number) => number): Verdict {
  let accepted = 0;
  while (accepted < draft.length && targetArgmax(accepted) === draft[accepted]) accepted++;
  return { accepted, token: targetArgmax(accepted) };
}

/** norm(max(0, p − q)) as unnormalised weights over p's vocabulary; q's ids beyond p's width carry no p mass. */
export function residual(p: Float32Array, q: SparseDistribution): Float32Array {
  const out = Float32Array.from(p);
  for (let i = 0; i < q.ids.length; i++) {
    const id = q.ids[i];
    if (id < out.length) out[id] = Math.max(0, out[id] - q.probs[i]);
  }
  return out;
}

/** Where the uniforms of a round come from: the request's seed and the absolute position of draft[0]. */
export interface RoundRandomness {
  readonly seed: number;
  readonly position: number;
}

/**
 * Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): draft token x at row i is kept with probability
 * min(1, p(x)/q(x)); at the first rejection the target draws from norm(max(0, p − q)); after K kept it draws the bonus
 * from p. `targetDistribution(i)` is p at row i (K+1 rows), `draftDistributions[i]` the q draft[i] was drawn from.
 */
export function acceptSpeculative(
  draft: readonly number[],
  draftDistributions: readonly SparseDistribution[],
  targetDistribution: (row: number) => Float32Array,
  randomness: RoundRandomness,
): Verdict {
  const { seed, position } = randomness;
  for (let i = 0; i < draft.length; i++) {
    const p = targetDistribution(i);
    const x = draft[i];
    const px = x < p.length ? p[x] : 0;
    const qx = probabilityOf(draftDistributions[i], x);
    if (qx > 0 && uniform(seed, position + i, Stream.accept) * qx < px) continue;
    const weights = residual(p, draftDistributions[i]);
    // p ≤ q everywhere only through rounding (then rejection had probability ~0): fall back to p itself.
    const rest = weights.some((w) => w > 0) ? weights : p;
    return { accepted: i, token: drawToken(rest, uniform(seed, position + i, Stream.target)) };
  }
  const bonus = targetDistribution(draft.length);
  return { accepted: draft.length, token: drawToken(bonus, uniform(seed, position + draft.length, Stream.target)) };
}

/** Entropy in nats of a dense distribution. */
function entropy(p: Float32Array): number {
  let h = 0;
  for (let i = 0; i < p.length; i++) if (p[i] > 0) h -= p[i] * Math.log(p[i]);
  return h;
}

/** Whether `token` is among the k most probable tokens of p (ties broken by lower id, as in sampling.ts). */
function inTopK(p: Float32Array, token: number, k: number): boolean {
  if (token >= p.length) return false;
  const pt = p[token];
  let better = 0;
  for (let i = 0; i < p.length && better < k; i++) if (p[i] > pt || (p[i] === pt && i < token)) better++;
  return better < k;
}

/**
 * LOSSY relaxed acceptance. `judged(i)` is the distribution the rule is applied to (the softened target at
 * temperature 1 in greedy mode, so that top-k and entropy mean something); the target's own token at the first
 * rejection, and the bonus, come from `emit(i)` (argmax or a draw from p).
 */
export function acceptRelaxed(
  draft: readonly number[],
  mode: Exclude<AcceptanceMode, { kind: "lossless" }>,
  judged: (row: number) => Float32Array,
  emit: (row: number) => number,
): Verdict {
  for (let i = 0; i < draft.length; i++) {
    const p = judged(i);
    const x = draft[i];
    const ok =
      mode.kind === "top-k"
        ? inTopK(p, x, mode.k)
        : x < p.length && p[x] > Math.min(mode.epsilon, mode.delta * Math.exp(-entropy(p)));
    if (!ok) return { accepted: i, token: emit(i) };
  }
  return { accepted: draft.length, token: emit(draft.length) };
}

export interface RoundToVerify {
  /** The K draft tokens (K may be 0: the round is one step of plain decoding). */
  readonly draftTokens: readonly number[];
  /** The q each draft token was drawn from; required for lossless verification at temperature > 0. */
  readonly draftDistributions?: readonly SparseDistribution[];
  /** Target logits, row-major [(K+1) × vocabSize]: the rows predicting draft[0..K) and the bonus position. */
  readonly targetLogits: Float32Array;
  readonly vocabSize: number;
  readonly sampling: SamplingParams;
  readonly acceptance: AcceptanceMode;
  /** Per-request seed (ignored when greedy). */
  readonly seed: number;
  /** Absolute sequence position of draft[0] (the number of tokens committed before this round). */
  readonly position: number;
}

/** Verifies one round from the target's logits. */
export function verifyRound(round: RoundToVerify): Verdict {
  const { draftTokens, targetLogits, vocabSize, sampling, acceptance, seed, position } = round;
  const rows = draftTokens.length + 1;
  if (targetLogits.length !== rows * vocabSize) {
    throw new Error(`verifyRound: expected ${rows} logits rows of ${vocabSize}, got ${targetLogits.length} values`);
  }
  const row = (i: number) => targetLogits.subarray(i * vocabSize, (i + 1) * vocabSize);
  const greedy = isGreedy(sampling);
  const cache = new Map<number, Float32Array>();
  const p = (i: number) => {
    const known = cache.get(i);
    if (known) return known;
    const d = distribution(row(i), sampling);
    cache.set(i, d);
    return d;
  };
  const emit = (i: number) => (greedy ? argmax(row(i)) : drawToken(p(i), uniform(seed, position + i, Stream.target)));
  if (acceptance.kind !== "lossless") {
    const judged = greedy ? (i: number) => distribution(row(i), { temperature: 1 }) : p;
    return acceptRelaxed(draftTokens, acceptance, judged, emit);
  }
  if (greedy) return acceptGreedy(draftTokens, (i) => argmax(row(i)));
  const q = round.draftDistributions ?? [];
  if (q.length !== draftTokens.length) {
    throw new Error("verifyRound: lossless sampling needs the draft distribution of every draft token");
  }
  return acceptSpeculative(draftTokens, q, p, { seed, position });
}
