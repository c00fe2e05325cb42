/** The small statistics every benchmark reports with, in one place. */

export function round(value: number, digits = 3): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

export function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** 0 for no values. */
export function mean(values: readonly number[]): number {
  return values.length === 0 ? 0 : sum(values) / values.length;
}

/** The value below which a share `q` of the values lie (nearest rank); NaN for no values. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

export interface Spread {
  readonly min: number;
  readonly median: number;
}

/** Fastest and median of repeated timings, rounded. */
export function spread(values: readonly number[]): Spread {
  return { min: round(Math.min(...values)), median: round(quantile(values, 0.5)) };
}

/** A ratio measured in pairs: its geometric mean and a 95% confidence interval (normal on the logs). */
export interface PairedRatio {
  readonly ratio: number;
  readonly ci95: readonly [number, number];
  readonly pairs: number;
}

/**
 * The ratio of `over` to `under`, pair by pair (the same prompt and repeat under two configurations, run side by side),
 * so that what the prompts and the moment share cancels: how sure a run is that one configuration beats the other.
 */
export function pairedRatio(over: readonly number[], under: readonly number[]): PairedRatio {
  const logs = over.map((o, i) => Math.log(o / under[i]));
  const n = logs.length;
  const centre = mean(logs);
  const sd = n > 1 ? Math.sqrt(sum(logs.map((l) => (l - centre) ** 2)) / (n - 1)) : 0;
  const half = (1.96 * sd) / Math.sqrt(Math.max(1, n));
  return {
    ratio: round(Math.exp(centre)),
    ci95: [round(Math.exp(centre - half)), round(Math.exp(centre + half))],
    pairs: n,
  };
}
