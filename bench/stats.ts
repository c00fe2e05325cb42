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
