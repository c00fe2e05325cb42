/**
 * The compact wire form of a draft distribution q (DraftDistribution in common.proto): the support only, ascending
 * token ids delta-encoded, probabilities as fixed-point numerators over PROBABILITY_SCALE that sum to it exactly.
 *
 * Speculative sampling stays lossless only if the draft token is drawn from exactly the q the target uses. So the
 * draft service quantises q first and samples from the quantised distribution (the engine's `drawSparse` is exact on
 * it: every probability is a multiple of 2^-16, so float sums and comparisons carry no rounding); the target reads
 * the very same numbers back with `fromWire`. Distributions here have the engine's SparseDistribution shape
 * ({ ids, probs }). Pure functions, no I/O.
 */
import type { DraftDistribution, DraftDistribution__Output } from "../gen/specgate/v1/DraftDistribution.ts";

/** Denominator of every quantised probability (16 bits of precision). */
export const PROBABILITY_SCALE = 65536;

export interface Distribution {
  readonly ids: ArrayLike<number>;
  readonly probs: ArrayLike<number>;
}

/** A quantised distribution: ascending ids, probabilities k / PROBABILITY_SCALE (k >= 1) summing to exactly 1. */
export interface QuantisedDistribution {
  readonly ids: Int32Array;
  readonly probs: Float32Array;
}

/**
 * Quantises a distribution over its support (any order, need not be normalised, zeros allowed) by the
 * largest-remainder method so the numerators sum to PROBABILITY_SCALE exactly. Tokens whose share rounds to zero
 * leave the support.
 */
export function quantise(dist: Distribution): QuantisedDistribution {
  const { ids, probs } = dist;
  if (ids.length !== probs.length) throw new RangeError("ids and probs differ in length");
  let total = 0;
  for (let i = 0; i < probs.length; i++) {
    if (!(probs[i] >= 0 && Number.isFinite(probs[i]))) throw new RangeError(`probability ${probs[i]} is invalid`);
    total += probs[i];
  }
  if (!(total > 0)) throw new RangeError("a draft distribution needs positive mass");

  const numerators = new Uint32Array(probs.length);
  const remainders = new Float64Array(probs.length);
  let assigned = 0;
  for (let i = 0; i < probs.length; i++) {
    const exact = (probs[i] / total) * PROBABILITY_SCALE;
    numerators[i] = Math.floor(exact);
    remainders[i] = exact - numerators[i];
    assigned += numerators[i];
  }
  // Ties broken by token id so that quantisation does not depend on the order the support came in.
  const order = Array.from(numerators.keys());
  const byRemainder = order.slice().sort((a, b) => remainders[b] - remainders[a] || ids[a] - ids[b]);
  for (let r = 0; r < PROBABILITY_SCALE - assigned; r++) numerators[byRemainder[r]] += 1;

  const kept = order.filter((i) => numerators[i] > 0).sort((a, b) => ids[a] - ids[b]);
  for (let j = 1; j < kept.length; j++) {
    if (ids[kept[j]] === ids[kept[j - 1]]) throw new RangeError(`token ${ids[kept[j]]} appears twice in the support`);
  }
  return {
    ids: Int32Array.from(kept, (i) => ids[i]),
    probs: Float32Array.from(kept, (i) => numerators[i] / PROBABILITY_SCALE),
  };
}

/** Wire form of a quantised distribution: ids delta-encoded (small gaps are one-byte varints), integer numerators. */
export function toWire(q: QuantisedDistribution): DraftDistribution {
  const token_ids = Array.from(q.ids, (id, i) => (i === 0 ? id : id - q.ids[i - 1]));
  const probabilities = Array.from(q.probs, (p) => p * PROBABILITY_SCALE);
  if (!probabilities.every((n) => Number.isInteger(n) && n >= 1)) {
    throw new RangeError("toWire needs a distribution made by quantise()");
  }
  return { token_ids, probabilities };
}

/** Reads a wire distribution back, checking every invariant (a malformed q would silently bias acceptance). */
export function fromWire(wire: DraftDistribution__Output): QuantisedDistribution {
  const { token_ids: gaps, probabilities } = wire;
  if (gaps.length === 0) throw new RangeError("draft distribution has an empty support");
  if (gaps.length !== probabilities.length) {
    throw new RangeError("draft distribution ids and probabilities differ in length");
  }
  const ids = new Int32Array(gaps.length);
  let sum = 0;
  for (let i = 0; i < gaps.length; i++) {
    if (i > 0 && gaps[i] < 1) throw new RangeError("draft distribution token ids are not strictly ascending");
    ids[i] = i === 0 ? gaps[0] : ids[i - 1] + gaps[i];
    if (probabilities[i] < 1) throw new RangeError("draft distribution holds a zero probability");
    sum += probabilities[i];
  }
  if (sum !== PROBABILITY_SCALE) throw new RangeError(`draft distribution sums to ${sum}, not ${PROBABILITY_SCALE}`);
  return { ids, probs: Float32Array.from(probabilities, (n) => n / PROBABILITY_SCALE) };
}
