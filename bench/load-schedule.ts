/**
 * The load generator's arrival schedule, fixed in advance from a seed so a run never waits for an answer before
 * sending the next request (open loop) and can be replayed exactly. Pure.
 *
 * Arrivals form a Poisson process: independent exponential gaps of mean 1/rate. Prompt and output lengths are drawn
 * from log-normal distributions, the shape measured in traces of chat services (a body of short requests and a long
 * right tail: ShareGPT, Azure LLM inference traces), each given by its median and log-space spread σ and clipped to
 * [min, max] so that prompt + output fits the served model's context.
 */
import { philox4x32 } from "../services/engine/rng.ts";

export interface LengthDistribution {
  readonly median: number;
  /** Standard deviation of the length's logarithm (0: every length is the median). */
  readonly sigma: number;
  readonly min: number;
  readonly max: number;
}

export interface ScheduleOptions {
  readonly seed: number;
  /** Mean arrivals per second. */
  readonly ratePerS: number;
  /** Most requests sent. */
  readonly maxRequests: number;
  /** No arrival later than this, seconds after the start. */
  readonly durationS: number;
  readonly promptTokens: LengthDistribution;
  readonly outputTokens: LengthDistribution;
}

export interface Arrival {
  readonly index: number;
  /** When to send, ms after the start. */
  readonly atMs: number;
  readonly promptTokens: number;
  /** The request's max_tokens. */
  readonly maxTokens: number;
  /** Uniform in [0, 1): where the prompt's text starts in the prompt corpus. */
  readonly promptStart: number;
}

const TWO_32 = 4294967296;

/** Uniform doubles in [0, 1), the `i`-th a pure function of (seed, i): Philox, as the engine's draws are. */
export function seededUniform(seed: number): (i: number) => number {
  const key = [seed >>> 0, Math.floor(seed / TWO_32) >>> 0];
  return (i) => {
    const [a, b] = philox4x32([i >>> 0, Math.floor(i / TWO_32) >>> 0, 0x10ad, 0], key);
    return ((a >>> 5) * 67108864 + (b >>> 6)) / 9007199254740992;
  };
}

/** A gap of the Poisson process of `ratePerS`, in ms, from a uniform in [0, 1). */
export function exponentialGapMs(u: number, ratePerS: number): number {
  return (-Math.log1p(-u) / ratePerS) * 1000;
}

/** A length from two uniforms (Box–Muller for the normal in log space), rounded and clipped. */
export function logNormalLength(u1: number, u2: number, distribution: LengthDistribution): number {
  const normal = Math.sqrt(-2 * Math.log1p(-u1)) * Math.cos(2 * Math.PI * u2);
  const length = Math.round(distribution.median * Math.exp(distribution.sigma * normal));
  return Math.min(distribution.max, Math.max(distribution.min, length));
}

/** The requests of a run, in arrival order: at most `maxRequests`, none after `durationS`. */
export function arrivalSchedule(options: ScheduleOptions): Arrival[] {
  if (!(options.ratePerS > 0)) throw new RangeError(`the arrival rate must be > 0, got ${options.ratePerS}`);
  const uniform = seededUniform(options.seed);
  const arrivals: Arrival[] = [];
  let atMs = 0;
  for (let index = 0; index < options.maxRequests; index++) {
    // Six draws per request, each at its own counter: a request's lengths do not depend on the rate.
    const draw = (k: number) => uniform(index * 6 + k);
    atMs += exponentialGapMs(draw(0), options.ratePerS);
    if (atMs > options.durationS * 1000) break;
    arrivals.push({
      index,
      atMs,
      promptTokens: logNormalLength(draw(1), draw(2), options.promptTokens),
      maxTokens: logNormalLength(draw(3), draw(4), options.outputTokens),
      promptStart: draw(5),
    });
  }
  return arrivals;
}
