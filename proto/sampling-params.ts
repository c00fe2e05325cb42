/**
 * SamplingParams (common.proto) read into the engine's shape (services/engine/sampling.ts), with the checks the
 * contract documents. Every service that receives sampling parameters (gateway, draft, target) reads them here, so the
 * draft's q and the target's p are shaped from the same numbers. Pure, no I/O.
 */
import type { SamplingParams__Output } from "../gen/specgate/v1/SamplingParams.ts";
import { MAX_SEED } from "../services/engine/rng.ts";
import type { SamplingParams as EngineSamplingParams } from "../services/engine/sampling.ts";

/** The sampling parameters with the seed every internal message carries. */
export interface SeededSampling extends EngineSamplingParams {
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
  if (!(Number.isSafeInteger(seed) && seed >= 0 && seed <= MAX_SEED)) {
    throw new RangeError(`sampling.seed must be an integer in [0, 2^53 - 1], got ${seed}`);
  }
  return {
    temperature,
    ...(topK > 0 ? { topK } : {}),
    ...(topP !== undefined ? { topP } : {}),
    seed,
  };
}
