/**
 * Goodness of fit of observed token counts to an expected distribution, for the losslessness tests of speculative
 * sampling. Runs are seeded, so a test either always passes or always fails; the 0.001 level only bounds how unlucky
 * a chosen seed can be.
 */

export interface FitResult {
  /** Pearson's statistic over the bins with positive expected probability (those expecting fewer than 5 pooled). */
  readonly statistic: number;
  readonly degreesOfFreedom: number;
  /** Critical value at the 0.001 level (Wilson–Hilferty approximation). */
  readonly critical: number;
  /** Observations that fell where the expected probability is 0 (must be none). */
  readonly impossible: number;
  /** Total variation distance between the empirical and the expected distribution. */
  readonly totalVariation: number;
}

export function chiSquareFit(observed: ArrayLike<number>, expected: ArrayLike<number>): FitResult {
  let n = 0;
  for (let i = 0; i < observed.length; i++) n += observed[i];
  let statistic = 0;
  let bins = 0;
  let impossible = 0;
  let totalVariation = 0;
  let pooledObserved = 0;
  let pooledExpected = 0;
  const addBin = (o: number, e: number) => {
    statistic += (o - e) ** 2 / e;
    bins++;
  };
  for (let i = 0; i < Math.max(observed.length, expected.length); i++) {
    const o = observed[i] ?? 0;
    const p = expected[i] ?? 0;
    totalVariation += Math.abs(o / n - p) / 2;
    if (p <= 0) impossible += o;
    else if (n * p < 5) {
      pooledObserved += o;
      pooledExpected += n * p;
    } else addBin(o, n * p);
  }
  if (pooledExpected > 0) addBin(pooledObserved, pooledExpected);
  const df = Math.max(1, bins - 1);
  const z = 3.0902;
  const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  return { statistic, degreesOfFreedom: df, critical, impossible, totalVariation };
}
