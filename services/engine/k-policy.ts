/**
 * Speculation length per round. Fixed K, or adaptive: each sequence keeps a live estimate of its per-token
 * acceptance α, and each round picks the K that maximises expected tokens per unit of time,
 *   E(K) / (K·draft_step + verify(K+1)),   E(K) = (1 − α^(K+1)) / (1 − α),
 * from costs measured on this machine (verify cost as a curve over positions scored, not assumed flat). K = 0 (plain
 * decoding) when no K pays for its draft steps.
 */

export type KPolicyConfig =
  | { readonly kind: "fixed"; readonly k: number }
  | {
      readonly kind: "adaptive";
      /** Bounds on K (kMin 0 lets the policy switch speculation off). */
      readonly kMin: number;
      readonly kMax: number;
      /** α assumed before the pair (CostModel.alpha) or the sequence has shown any: a prior, not a measurement. */
      readonly initialAlpha?: number;
      /** Draft tokens after which an observation weighs half as much in the α estimate. */
      readonly alphaHalfLife?: number;
      /** While at K = 0, first try K = 1 after this many rounds (then after twice as many, up to 64). */
      readonly probeEvery?: number;
    };

/**
 * The default policy: adaptive K won against fixed K in the in-process benchmark (services/engine/README.md has the
 * figures), and it alone falls back to plain decoding when a drafter does not pay.
 */
export const DEFAULT_K_POLICY: KPolicyConfig = { kind: "adaptive", kMin: 0, kMax: 12 };

/** Expected tokens a round yields (accepted draft tokens plus the target's own) at per-token acceptance α. */
export function expectedTokensPerRound(alpha: number, k: number): number {
  if (alpha >= 1) return k + 1;
  return (1 - alpha ** (k + 1)) / (1 - alpha);
}

/** Costs of one round's parts, in milliseconds. */
export interface RoundCosts {
  /** Drafting with `forwards` draft forwards that feed `positions` positions in all (a chain of K: K and K). */
  draftMs(forwards: number, positions: number): number;
  /** One verify forward scoring `positions` positions. */
  verifyMs(positions: number): number;
}

/** What a round asked for: its draft forwards and the positions they fed, and the positions the target scored. */
export interface RoundWork {
  readonly draftForwards: number;
  readonly draftPositions: number;
  readonly positions: number;
}

/** A chain of `proposed` tokens: one draft forward of one position each, and the root's position besides theirs. */
export function chainWork(proposed: number): RoundWork {
  return { draftForwards: proposed, draftPositions: proposed, positions: proposed + 1 };
}

/** Expected tokens per millisecond when speculating K tokens. */
export function tokensPerMs(alpha: number, k: number, costs: RoundCosts): number {
  return expectedTokensPerRound(alpha, k) / (costs.draftMs(k, k) + costs.verifyMs(k + 1));
}

/** The K in [kMin, kMax] with the highest expected tokens per millisecond (smallest K on ties). */
export function bestK(alpha: number, costs: RoundCosts, kMin: number, kMax: number): number {
  let best = kMin;
  let bestRate = tokensPerMs(alpha, kMin, costs);
  for (let k = kMin + 1; k <= kMax; k++) {
    const rate = tokensPerMs(alpha, k, costs);
    if (rate > bestRate) {
      best = k;
      bestRate = rate;
    }
  }
  return best;
}

const COST_HALF_LIFE = 16;
const COST_WEIGHT = 1 - 2 ** (-1 / COST_HALF_LIFE);
/** The pair's α moves slower than a sequence's: it is a prior, not the sequence's local difficulty. */
const PAIR_ALPHA_WEIGHT = 1 - 2 ** (-1 / 64);

/**
 * α after a round, each judged draft token being one trial of weight `weight`: the kept ones succeed, the first
 * rejected one fails; tokens after a rejection were never judged and do not count.
 */
export function updateAlpha(alpha: number, proposed: number, accepted: number, weight: number): number {
  let a = alpha;
  for (let i = 0; i < accepted; i++) a += weight * (1 - a);
  if (accepted < proposed) a -= weight * a;
  return a;
}

/**
 * Measured costs of one drafter/target pair, shared by all sequences that use it, every figure exponentially
 * weighted. Verify: a least-squares line through the verify times, verify(n) = intercept + slope·n for n positions;
 * one line shares what every round teaches across all K (noisy single timings of rarely chosen K do not steer the
 * policy), and its intercept carries a round's fixed costs (in the services: transport and queueing). Until two
 * different n have been seen the line is flat. Draft: a chain step (one forward of one position), a weighted mean
 * over chain rounds alone, because the K policy lives on it; and what each position a tree's forwards feed beyond
 * one per forward adds, a weighted mean over tree rounds of their time beyond as many chain steps (free until trees
 * have been timed). Both start optimistic, and the next measurements correct them.
 */
export class CostModel implements RoundCosts {
  /** The per-token acceptance the pair's sequences showed lately: where a new sequence's estimate starts. */
  alpha: number | undefined;
  /** Weighted sums of 1, n, n², y and n·y over verify samples (n positions, y ms). */
  private sums = { w: 0, n: 0, nn: 0, y: 0, ny: 0 };
  private draftStep: number | undefined;
  private draftExtraPosition: number | undefined;

  constructor(initial?: { draftStepMs?: number; verifySamples?: readonly (readonly [number, number])[] }) {
    this.draftStep = initial?.draftStepMs;
    for (const [n, ms] of initial?.verifySamples ?? []) this.recordVerify(n, ms);
  }

  /** A draft of `forwards` forwards that fed `positions` positions (as many for a chain, more for a tree). */
  recordDraft(ms: number, forwards: number, positions: number): void {
    if (forwards <= 0) return;
    const step = this.draftStep;
    if (positions <= forwards || step === undefined) {
      this.draftStep = step === undefined ? ms / forwards : step + COST_WEIGHT * (ms / forwards - step);
      return;
    }
    const extra = Math.max(0, ms - step * forwards) / (positions - forwards);
    const known = this.draftExtraPosition;
    this.draftExtraPosition = known === undefined ? extra : known + COST_WEIGHT * (extra - known);
  }

  draftMs(forwards: number, positions: number): number {
    return (this.draftStep ?? 0) * forwards + (this.draftExtraPosition ?? 0) * Math.max(0, positions - forwards);
  }

  recordAcceptance(proposed: number, accepted: number): void {
    if (proposed === 0) return;
    this.alpha = updateAlpha(this.alpha ?? accepted / proposed, proposed, accepted, PAIR_ALPHA_WEIGHT);
  }

  recordVerify(positions: number, ms: number): void {
    const s = this.sums;
    const keep = s.w === 0 ? 1 : 1 - COST_WEIGHT;
    this.sums = {
      w: s.w * keep + 1,
      n: s.n * keep + positions,
      nn: s.nn * keep + positions * positions,
      y: s.y * keep + ms,
      ny: s.ny * keep + positions * ms,
    };
  }

  /** A round's costs: its draft time for its draft work, and its verify time at the positions it scored. */
  recordRound(work: RoundWork, draftMs: number, verifyMs: number): void {
    this.recordDraft(draftMs, work.draftForwards, work.draftPositions);
    this.recordVerify(work.positions, verifyMs);
  }

  /** The fitted line (slope ≥ 0: scoring more positions never costs less). */
  verifyLine(): { intercept: number; slope: number } {
    const { w, n, nn, y, ny } = this.sums;
    if (w === 0) return { intercept: 1, slope: 0 };
    const spread = w * nn - n * n;
    const slope = spread > 1e-9 * w * w ? Math.max(0, (w * ny - n * y) / spread) : 0;
    return { intercept: (y - slope * n) / w, slope };
  }

  verifyMs(positions: number): number {
    const { intercept, slope } = this.verifyLine();
    return Math.max(intercept + slope * positions, Number.MIN_VALUE);
  }
}

/** A sequence's K policy: asked for K before each round, told the round's outcome after it. */
export interface KPolicy {
  /** The largest K it asks for: a tree policy may draft that deep. */
  readonly maxK: number;
  nextK(): number;
  observe(proposed: number, accepted: number): void;
}

/** Always the same K. */
export class FixedK implements KPolicy {
  constructor(private readonly k: number) {}
  get maxK(): number {
    return this.k;
  }
  nextK(): number {
    return this.k;
  }
  observe(_proposed: number, _accepted: number): void {}
}

/**
 * Per-sequence adaptive K over the pair's shared measurements. The sequence's α starts at the pair's recent α,
 * follows the sequence's own rounds (updateAlpha) and drifts back towards the pair's in rounds without proposals. At
 * K = 0 it probes with K = 1 now and then so α keeps being measured, doubling the wait after each probe that does not
 * bring speculation back (probes cost a draft step).
 */
export class AdaptiveK implements KPolicy {
  alpha: number;
  private roundsAtZero = 0;
  private probeInterval: number;
  private readonly weight: number;
  private readonly firstProbe: number;

  constructor(
    private readonly config: Extract<KPolicyConfig, { kind: "adaptive" }>,
    private readonly costs: CostModel,
  ) {
    this.alpha = costs.alpha ?? config.initialAlpha ?? 0.7;
    this.weight = 1 - 2 ** (-1 / (config.alphaHalfLife ?? 32));
    this.firstProbe = config.probeEvery ?? 8;
    this.probeInterval = this.firstProbe;
  }

  get maxK(): number {
    return this.config.kMax;
  }

  nextK(): number {
    const k = bestK(this.alpha, this.costs, this.config.kMin, this.config.kMax);
    if (k > 0) {
      this.roundsAtZero = 0;
      this.probeInterval = this.firstProbe;
      return k;
    }
    if (++this.roundsAtZero < this.probeInterval) return 0;
    this.roundsAtZero = 0;
    this.probeInterval = Math.min(2 * this.probeInterval, MAX_PROBE_INTERVAL);
    return Math.min(1, this.config.kMax);
  }

  observe(proposed: number, accepted: number): void {
    // A hard stretch of text is temporary: rounds without proposals let the estimate drift back to the pair's α, so
    // a sequence that dropped to K = 0 resumes speculating without waiting for probes to climb back trial by trial.
    if (proposed === 0 && this.costs.alpha !== undefined) {
      this.alpha += REVERSION_WEIGHT * (this.costs.alpha - this.alpha);
    }
    this.alpha = updateAlpha(this.alpha, proposed, accepted, this.weight);
    this.costs.recordAcceptance(proposed, accepted);
  }
}

const MAX_PROBE_INTERVAL = 64;
/** Rounds after which half of the gap between a sequence's α and the pair's has closed. */
const REVERSION_WEIGHT = 1 - 2 ** (-1 / 16);

export function createKPolicy(config: KPolicyConfig, costs: CostModel): KPolicy {
  return config.kind === "fixed" ? new FixedK(config.k) : new AdaptiveK(config, costs);
}
