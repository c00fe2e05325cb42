/**
 * SamplingParams (common.proto) read into the shape the engine samples with, with the checks the contract documents.
 * The draft service and the target read them here, so the draft's q and the target's p are shaped from the same
 * numbers. Pure, no I/O. The shape is spelled out rather than imported from the engine (as draft-distribution.ts does
 * for distributions): the contract layer depends on no service, and the services that hand it to the engine are where
 * the compiler checks the two against each other.
 */
import type { SamplingParams__Output } from "../gen/specgate/v1/SamplingParams.ts";

/** The engine's sampling parameters (services/engine/sampling.ts) with the seed every internal message carries. */
export interface SeededSampling {
  /** 0 means greedy. */
  readonly temperature: number;
  readonly topK?: number;
  readonly topP?: number;
  readonly seed: number;
}

/**
 * Checks and converts wire sampling parameters. Throws a RangeError naming the field when one is out of range, or
 * when `seed` is missing (internal messages always carry it; the gateway picks one for clients that did not).
 */
export function seededSamplingFromWire(wire: SamplingParams__Output | null | undefined): SeededSampling {
  const temperature = wire?.temperature ?? 0;
  const topK = wire?.top_k ?? 0;
  const topP = wire?.top_p;
  const seed = wire?.seed;
  if (!(Number.isFinite(temperature) && temperature >= 0)) {
    throw new RangeError(`sampling.temperature must be a finite number >= 0, got ${temperature}`);
  }
  if (!(Number.isInteger(topK) && topK >= 0)) throw new RangeError(`sampling.top_k must be >= 0, got ${topK}`);
  if (topP !== undefined && !(topP > 0 && topP <= 1)) {
    throw new RangeError(`sampling.top_p must lie in (0, 1], got ${topP}`);
  }
  if (seed === undefined) throw new RangeError("sampling.seed must be set");
  // The safe integers: every seed the engine keeps exactly (rng.ts MAX_SEED).
  if (!(Number.isSafeInteger(seed) && seed >= 0)) {
    throw new RangeError(`sampling.seed must be an integer in [0, 2^53 - 1], got ${seed}`);
  }
  return {
    temperature,
    ...(topK > 0 ? { topK } : {}),
    ...(topP !== undefined ? { topP } : {}),
    seed,
  };
}
