import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { findSustainableRate } from "../../bench/load-rate-search.ts";
import {
  type LoadSummary,
  meetsObjective,
  type RequestOutcome,
  summarize,
  sustained,
  timePerOutputTokenMs,
} from "../../bench/load-summary.ts";

const OBJECTIVE = { ttftMs: 100, tpotMs: 10 };

/** A completed request sent at `sentMs` whose first token took `ttft` and each later one `tpot`. */
function completed(sentMs: number, ttft: number, tpot: number, tokens: number): RequestOutcome {
  const firstTokenMs = sentMs + ttft;
  const lastTokenMs = firstTokenMs + tpot * (tokens - 1);
  return { kind: "completed", sentMs, firstTokenMs, lastTokenMs, endMs: lastTokenMs + 1, outputTokens: tokens };
}

describe("load summary", () => {
  it("counts completed, shed (with and without a retry hint) and failed by code", () => {
    const summary = summarize(
      [
        completed(0, 50, 5, 11),
        { kind: "shed", sentMs: 10, endMs: 11, retryAfterMs: 200 },
        { kind: "shed", sentMs: 20, endMs: 21 },
        { kind: "failed", sentMs: 30, endMs: 40, code: "INTERNAL" },
        { kind: "failed", sentMs: 30, endMs: 40, code: "INTERNAL" },
        { kind: "failed", sentMs: 30, endMs: 40, code: "DEADLINE_EXCEEDED" },
      ],
      OBJECTIVE,
    );
    assert.equal(summary.requests, 6);
    assert.equal(summary.completed, 1);
    assert.equal(summary.shed, 2);
    assert.equal(summary.shed_with_retry_hint, 1);
    assert.equal(summary.failed, 3);
    assert.deepEqual(summary.failures, { INTERNAL: 2, DEADLINE_EXCEEDED: 1 });
  });

  it("ttft and tpot percentiles are nearest-rank over the completed requests", () => {
    // ttft 1..100 ms, tpot 0.1..10 ms: p50 is the 51st value, p99 the 100th.
    const outcomes = Array.from({ length: 100 }, (_, i) => completed(i * 10, i + 1, (i + 1) / 10, 5));
    const summary = summarize([...outcomes, { kind: "shed", sentMs: 0, endMs: 1 }], OBJECTIVE);
    assert.equal(summary.ttft_ms_p50, 51);
    assert.equal(summary.ttft_ms_p99, 100);
    assert.equal(summary.tpot_ms_p50, 5.1);
    assert.equal(summary.tpot_ms_p99, 10);
    assert.equal(timePerOutputTokenMs(completed(0, 10, 4, 1)), undefined, "one token has no time per token");
    const none = summarize([{ kind: "shed", sentMs: 0, endMs: 1 }], OBJECTIVE);
    assert.equal(none.ttft_ms_p50, null, "no completed request: no percentile (JSON has no NaN)");
    assert.equal(none.slo_attainment, null);
  });

  it("goodput counts per second of wall time the completed requests within both objectives", () => {
    const outcomes: RequestOutcome[] = [
      completed(0, 50, 5, 11), // good
      completed(500, 150, 5, 11), // ttft too long
      completed(1000, 50, 20, 11), // tpot too long
      completed(1500, 100, 10, 3), // exactly at both bounds: good
      completed(1979, 20, 1000, 1), // one token: only ttft counts, good; ends at 2000
      { kind: "shed", sentMs: 0, endMs: 1, retryAfterMs: 5 },
    ];
    assert.deepEqual(
      outcomes.map((o) => meetsObjective(o, OBJECTIVE)),
      [true, false, false, true, true, false],
    );
    const summary = summarize(outcomes, OBJECTIVE);
    // Wall time: first send (0) to last answer (2000).
    assert.equal(summary.wall_s, 2);
    assert.equal(summary.goodput_rps, 1.5);
    assert.equal(summary.output_tokens, 11 + 11 + 11 + 3 + 1);
    assert.equal(summary.tokens_per_s, 18.5);
    assert.equal(summary.slo_attainment, 0.6);
    // Latencies 101 + 201 + 251 + 121 + 21 = 695 ms over 2000 ms of wall time.
    assert.equal(summary.concurrency, 0.35);
  });

  it("a run is sustained when nothing is shed or failed and enough requests meet the objective", () => {
    const base = summarize([completed(0, 50, 5, 11), completed(10, 50, 5, 11)], OBJECTIVE);
    assert.equal(sustained(base, 0.9), true);
    const slow = summarize([completed(0, 50, 5, 11), completed(10, 500, 5, 11)], OBJECTIVE);
    assert.equal(sustained(slow, 0.9), false);
    assert.equal(sustained(slow, 0.5), true);
    const shed: LoadSummary = { ...base, shed: 1 };
    assert.equal(sustained(shed, 0.9), false);
    assert.equal(sustained({ ...base, failed: 1 }, 0.9), false);
  });
});

describe("sustainable rate search", () => {
  const upTo = (limit: number) => async (rate: number) => rate <= limit;

  it("doubles until a rate fails, then bisects between the last pass and the first failure", async () => {
    const search = await findSustainableRate(1, 8, upTo(5));
    assert.deepEqual(
      search.probes.slice(0, 4).map((p) => [p.ratePerS, p.sustained]),
      [
        [1, true],
        [2, true],
        [4, true],
        [8, false],
      ],
    );
    assert.equal(search.probes.length, 8);
    assert.ok(search.ratePerS <= 5 && search.ratePerS > 4.5, `found ${search.ratePerS}`);
  });

  it("halves from a start rate that fails, and finds 0 when nothing passes", async () => {
    const search = await findSustainableRate(10, 6, upTo(3));
    assert.deepEqual(
      search.probes.slice(0, 3).map((p) => p.ratePerS),
      [10, 5, 2.5],
    );
    assert.ok(search.ratePerS <= 3 && search.ratePerS >= 2.5);
    assert.equal((await findSustainableRate(1, 4, upTo(0))).ratePerS, 0);
  });
});
