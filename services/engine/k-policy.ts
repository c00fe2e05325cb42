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
      /** α assumed before a sequence has shown any (a prior, not a measurement). */
      readonly initialAlpha?: number;
      /** Draft tokens after which an observation weighs half as much in the α estimate. */
      readonly alphaHalfLife?: number;
      /** While at K = 0, try K = 1 every this many rounds so α keeps being measured. */
      readonly probeEvery?: number;
    };

export const DEFAULT_ADAPTIVE: KPolicyConfig = { kind: "adaptive", kMin: 0, kMax: 12 };

/** Expected tokens a round yields (accepted draft tokens plus the target's own) at per-token acceptance α. */
export function expectedTokensPerRound(alpha: number, k: number): number {
  if (alpha >= 1) return k + 1;
  return (1 - alpha ** (k + 1)) / (1 - alpha);
}

/** Costs of one round's parts, in milliseconds. */
export interface RoundCosts {
  /** One draft step (one proposed token). */
  readonly draftStepMs: number;
  /** One verify forward scoring `positions` positions. */
  verifyMs(positions: number): number;
}

/** Expected tokens per millisecond when speculating K tokens. */
export function tokensPerMs(alpha: number, k: number, costs: RoundCosts): number {
  return expectedTokensPerRound(alpha, k) / (k * costs.draftStepMs + costs.verifyMs(k + 1));
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

/**
 * Measured costs of one drafter/target pair, shared by all sequences that use it: exponentially weighted means of
 * the draft step time and of the verify time per number of positions scored. Positions never measured are read off
 * the line through the measured ones (or flat when only one is known: optimism that gets corrected by measuring).
 */
export class CostModel implements RoundCosts {
  private draftStep: number | undefined;
  private readonly verify = new Map<number, number>();

  constructor(initial?: { draftStepMs?: number; verifyMs?: ReadonlyMap<number, number> }) {
    this.draftStep = initial?.draftStepMs;
    for (const [n, ms] of initial?.verifyMs ?? []) this.verify.set(n, ms);
  }

  recordDraft(ms: number, steps: number): void {
    if (steps <= 0) return;
    const perStep = ms / steps;
    this.draftStep = this.draftStep === undefined ? perStep : this.draftStep + COST_WEIGHT * (perStep - this.draftStep);
  }

  recordVerify(positions: number, ms: number): void {
    const old = this.verify.get(positions);
    this.verify.set(positions, old === undefined ? ms : old + COST_WEIGHT * (ms - old));
  }

  get draftStepMs(): number {
    return this.draftStep ?? 0;
  }

  verifyMs(positions: number): number {
    const known = this.verify.get(positions);
    if (known !== undefined) return known;
    const points = [...this.verify].sort((a, b) => a[0] - b[0]);
    if (points.length === 0) return 1;
    if (points.length === 1) return points[0][1];
    const below = points.filter(([n]) => n < positions).at(-1);
    const above = points.find(([n]) => n > positions);
    const [a, b] = below && above ? [below, above] : below ? points.slice(-2) : points.slice(0, 2);
    const slope = (b[1] - a[1]) / (b[0] - a[0]);
    return Math.max(a[1] + slope * (positions - a[0]), Number.MIN_VALUE);
  }

  /** The measured curve, for reports: positions scored → ms. */
  verifyCurve(): Record<number, number> {
    return Object.fromEntries([...this.verify].sort((a, b) => a[0] - b[0]));
  }
}

/** A sequence's K policy: asked for K before each round, told the round's outcome after it. */
export interface KPolicy {
  nextK(): number;
  observe(proposed: number, accepted: number): void;
}

/** Always the same K. */
export class FixedK implements KPolicy {
  constructor(private readonly k: number) {}
  nextK(): number {
    return this.k;
  }
  observe(_proposed: number, _accepted: number): void {}
}

/**
 * Per-sequence adaptive K over shared measured costs. The α estimate counts each draft token the target judged:
 * kept ones as successes, the first rejected one as a failure; tokens after a rejection were never judged.
 */
export class AdaptiveK implements KPolicy {
  alpha: number;
  private roundsAtZero = 0;
  private readonly weight: number;
  private readonly probeEvery: number;

  constructor(
    private readonly config: Extract<KPolicyConfig, { kind: "adaptive" }>,
    private readonly costs: RoundCosts,
  ) {
    this.alpha = config.initialAlpha ?? 0.7;
    this.weight = 1 - 2 ** (-1 / (config.alphaHalfLife ?? 32));
    this.probeEvery = config.probeEvery ?? 8;
  }

  nextK(): number {
    const k = bestK(this.alpha, this.costs, this.config.kMin, this.config.kMax);
    if (k > 0) {
      this.roundsAtZero = 0;
      return k;
    }
    this.roundsAtZero++;
    return this.roundsAtZero % this.probeEvery === 0 ? Math.min(1, this.config.kMax) : 0;
  }

  observe(proposed: number, accepted: number): void {
    for (let i = 0; i < accepted; i++) this.alpha += this.weight * (1 - this.alpha);
    if (accepted < proposed) this.alpha -= this.weight * this.alpha;
  }
}

export function createKPolicy(config: KPolicyConfig, costs: RoundCosts): KPolicy {
  return config.kind === "fixed" ? new FixedK(config.k) : new AdaptiveK(config, costs);
}
