import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { arrivalSchedule, logNormalLength, type ScheduleOptions, seededUniform } from "../../bench/load-schedule.ts";
import { mean, quantile } from "../../bench/stats.ts";

const WIDE = { min: 1, max: 1_000_000 };
const OPTIONS: ScheduleOptions = {
  seed: 7,
  ratePerS: 4,
  maxRequests: 20_000,
  durationS: 1e9,
  promptTokens: { median: 64, sigma: 0.7, ...WIDE },
  outputTokens: { median: 48, sigma: 0.6, ...WIDE },
};

const gaps = (atMs: readonly number[]) => atMs.map((t, i) => t - (i === 0 ? 0 : atMs[i - 1]));

describe("load schedule", () => {
  it("arrivals are a Poisson process of the given rate: exponential gaps of mean 1/rate", () => {
    const schedule = gaps(arrivalSchedule(OPTIONS).map((a) => a.atMs));
    assert.equal(schedule.length, 20_000);
    const meanGap = mean(schedule);
    // 20,000 gaps: the mean's standard error is 0.7% of it.
    assert.ok(Math.abs(meanGap - 250) < 250 * 0.03, `mean gap ${meanGap} ms, expected 250`);
    const sd = Math.sqrt(mean(schedule.map((g) => (g - meanGap) ** 2)));
    assert.ok(Math.abs(sd / meanGap - 1) < 0.05, `coefficient of variation ${sd / meanGap}, exponential: 1`);
    // Memorylessness, at two points of the distribution: P(gap > t) = exp(-rate·t).
    for (const t of [250, 750]) {
      const share = schedule.filter((g) => g > t).length / schedule.length;
      assert.ok(Math.abs(share - Math.exp(-t / 250)) < 0.015, `P(gap > ${t}) = ${share}`);
    }
    assert.ok(Math.abs(mean(gaps(arrivalSchedule({ ...OPTIONS, ratePerS: 40 }).map((a) => a.atMs))) - 25) < 1);
  });

  it("is a function of the seed: the same seed replays it, another seed does not", () => {
    const small = { ...OPTIONS, maxRequests: 50 };
    assert.deepEqual(arrivalSchedule(small), arrivalSchedule(small));
    const other = arrivalSchedule({ ...small, seed: 8 });
    assert.notDeepEqual(
      other.map((a) => a.atMs),
      arrivalSchedule(small).map((a) => a.atMs),
    );
    const fast = arrivalSchedule({ ...small, ratePerS: 40 });
    assert.deepEqual(
      fast.map((a) => [a.promptTokens, a.maxTokens]),
      arrivalSchedule(small).map((a) => [a.promptTokens, a.maxTokens]),
      "a request's lengths do not depend on the rate",
    );
  });

  it("is bounded by count and by duration", () => {
    assert.equal(arrivalSchedule({ ...OPTIONS, maxRequests: 10 }).length, 10);
    const timed = arrivalSchedule({ ...OPTIONS, durationS: 10 });
    assert.ok(timed.every((a) => a.atMs <= 10_000));
    // About rate × duration = 40 arrivals (Poisson: sd ≈ 6.3).
    assert.ok(timed.length > 15 && timed.length < 65, `${timed.length} arrivals in 10 s at 4/s`);
    assert.throws(() => arrivalSchedule({ ...OPTIONS, ratePerS: 0 }), /rate must be > 0/);
  });

  it("lengths are log-normal with the given median and spread, clipped to [min, max]", () => {
    const schedule = arrivalSchedule(OPTIONS);
    for (const [lengths, { median, sigma }] of [
      [schedule.map((a) => a.promptTokens), OPTIONS.promptTokens],
      [schedule.map((a) => a.maxTokens), OPTIONS.outputTokens],
    ] as const) {
      assert.ok(Math.abs(quantile(lengths, 0.5) - median) <= median * 0.03, `median ${quantile(lengths, 0.5)}`);
      const logs = lengths.map(Math.log);
      const m = mean(logs);
      const sd = Math.sqrt(mean(logs.map((l) => (l - m) ** 2)));
      assert.ok(Math.abs(sd - sigma) < 0.03, `σ of log length ${sd}, expected ${sigma}`);
    }
    const clipped = arrivalSchedule({ ...OPTIONS, promptTokens: { median: 64, sigma: 2, min: 8, max: 100 } });
    const prompts = clipped.map((a) => a.promptTokens);
    assert.equal(Math.min(...prompts), 8);
    assert.equal(Math.max(...prompts), 100);
    assert.equal(logNormalLength(0.3, 0.9, { median: 50, sigma: 0, min: 1, max: 99 }), 50);
  });

  it("draws uniforms in [0, 1)", () => {
    const uniform = seededUniform(3);
    const draws = Array.from({ length: 10_000 }, (_, i) => uniform(i));
    assert.ok(draws.every((u) => u >= 0 && u < 1));
    assert.ok(Math.abs(mean(draws) - 0.5) < 0.01);
  });
});
