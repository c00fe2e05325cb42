/**
 * Logits to token distributions with temperature, top-k and top-p, and drawing tokens from them. The same function
 * shapes the target's p and the draft's q, which is what makes speculative sampling reproduce the target's own
 * sampling distribution exactly.
 */
import { argmax } from "../runtime/greedy.ts";

export interface SamplingParams {
  /** 0 means greedy (argmax); otherwise logits are divided by it. */
  readonly temperature: number;
  /** Keep only the k most probable tokens (0 or absent: no limit). */
  readonly topK?: number;
  /** Keep the smallest set of most probable tokens whose mass reaches p (1 or absent: no limit). */
  readonly topP?: number;
  /** Per-request seed of the counter-based generator (rng.ts). */
  readonly seed?: number;
}

export const GREEDY: SamplingParams = { temperature: 0 };

export function isGreedy(params: SamplingParams): boolean {
  return params.temperature === 0;
}

/** A distribution given by its support: token ids and their probabilities (summing to 1 up to rounding). */
export interface SparseDistribution {
  readonly ids: Int32Array;
  readonly probs: Float32Array;
}

/** Candidate ids ordered by decreasing probability, ties by increasing id (a total order every process agrees on). */
function rankedCandidates(probs: Float64Array): number[] {
  const ids: number[] = [];
  for (let i = 0; i < probs.length; i++) if (probs[i] > 0) ids.push(i);
  ids.sort((a, b) => probs[b] - probs[a] || a - b);
  return ids;
}

/**
 * The sampling distribution over the row's vocabulary: softmax(logits / temperature), then top-k, then top-p, then
 * renormalised. Ids whose logit is -Infinity (masked vocabulary padding) get probability 0. Greedy params yield the
 * one-hot distribution on the argmax, which keeps the acceptance rule uniform across modes.
 */
export function distribution(logits: Float32Array, params: SamplingParams): Float32Array {
  const out = new Float32Array(logits.length);
  if (isGreedy(params)) {
    out[argmax(logits)] = 1;
    return out;
  }
  const max = logits[argmax(logits)];
  const probs = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = Math.exp((logits[i] - max) / params.temperature);
    probs[i] = e;
    total += e;
  }
  const topK = params.topK ?? 0;
  const topP = params.topP ?? 1;
  if ((topK > 0 && topK < logits.length) || topP < 1) {
    const ranked = rankedCandidates(probs);
    let keep = topK > 0 ? Math.min(topK, ranked.length) : ranked.length;
    if (topP < 1) {
      let kept = 0;
      for (let i = 0; i < keep; i++) kept += probs[ranked[i]];
      let mass = 0;
      for (let i = 0; i < keep; i++) {
        mass += probs[ranked[i]];
        // Compared against the mass left after top-k, so top-p acts on the renormalised distribution.
        if (mass >= topP * kept) {
          keep = i + 1;
          break;
        }
      }
    }
    total = 0;
    for (let i = 0; i < keep; i++) {
      const id = ranked[i];
      out[id] = probs[id];
      total += probs[id];
    }
    for (let i = 0; i < keep; i++) out[ranked[i]] /= total;
    return out;
  }
  for (let i = 0; i < logits.length; i++) out[i] = probs[i] / total;
  return out;
}

/** The support of a dense distribution: the compact form drafts send over the wire. */
export function sparse(dense: Float32Array): SparseDistribution {
  let count = 0;
  for (let i = 0; i < dense.length; i++) if (dense[i] > 0) count++;
  const ids = new Int32Array(count);
  const probs = new Float32Array(count);
  let j = 0;
  for (let i = 0; i < dense.length; i++) {
    if (dense[i] > 0) {
      ids[j] = i;
      probs[j] = dense[i];
      j++;
    }
  }
  return { ids, probs };
}

/** The distribution that puts all mass on one token (deterministic drafters, greedy drafts). */
export function oneHot(token: number): SparseDistribution {
  return { ids: Int32Array.of(token), probs: Float32Array.of(1) };
}

/** Probability of `token` under a sparse distribution (0 outside its support). */
export function probabilityOf(dist: SparseDistribution, token: number): number {
  for (let i = 0; i < dist.ids.length; i++) if (dist.ids[i] === token) return dist.probs[i];
  return 0;
}

/**
 * Inverse-CDF draw of a token id from dense non-negative weights (need not be normalised) with the uniform `u` in
 * [0, 1). Falls back
 * to the last positive weight when rounding leaves u·total above the running sum.
 */
export function drawToken(weights: ArrayLike<number>, u: number): number {
  let total = 0;
  for (let i = 0; i < weights.length; i++) total += weights[i];
  const target = u * total;
  let sum = 0;
  let last = -1;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i];
    if (w <= 0) continue;
    sum += w;
    last = i;
    if (target < sum) return i;
  }
  if (last < 0) throw new Error("cannot sample from a distribution with no mass");
  return last;
}

/** A token drawn from a sparse distribution. */
export function drawSparse(dist: SparseDistribution, u: number): number {
  return dist.ids[drawToken(dist.probs, u)];
}
