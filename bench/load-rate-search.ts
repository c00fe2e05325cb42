/**
 * The search for the sustainable rate: the highest arrival rate a run keeps up with (load-summary.ts `sustained`),
 * found by doubling from a start rate until a run fails, or halving until one passes, then bisecting (geometrically)
 * between the last rate that passed and the first that failed. Bounded by a number of probe runs. I/O-free: the probe
 * is given.
 */

export interface RateProbe {
  readonly ratePerS: number;
  readonly sustained: boolean;
}

export interface RateSearch {
  /** The highest rate that passed; 0 when none did. */
  readonly ratePerS: number;
  readonly probes: readonly RateProbe[];
}

export async function findSustainableRate(
  startPerS: number,
  maxProbes: number,
  probe: (ratePerS: number) => Promise<boolean>,
): Promise<RateSearch> {
  const probes: RateProbe[] = [];
  const run = async (ratePerS: number) => {
    const ok = await probe(ratePerS);
    probes.push({ ratePerS, sustained: ok });
    return ok;
  };
  let passed = 0;
  let failed = Number.POSITIVE_INFINITY;
  let rate = startPerS;
  while (probes.length < maxProbes) {
    if (await run(rate)) passed = Math.max(passed, rate);
    else failed = Math.min(failed, rate);
    if (failed === Number.POSITIVE_INFINITY) rate = passed * 2;
    else if (passed === 0) rate = failed / 2;
    else rate = Math.sqrt(passed * failed);
  }
  return { ratePerS: passed, probes };
}
