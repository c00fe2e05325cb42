import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Stream, uniform } from "../../services/engine/rng.ts";
import {
  distribution,
  drawSparse,
  drawToken,
  type SamplingParams,
  type SparseDistribution,
  sparse,
} from "../../services/engine/sampling.ts";
import {
  acceptGreedy,
  acceptSpeculative,
  isLossy,
  LOSSLESS,
  residual,
  type Verdict,
  verifyRound,
} from "../../services/engine/verify.ts";
import { chiSquareFit } from "../support/chi-square.ts";

/** Logits rows whose argmax is the given token. */
function rowsWithArgmax(tokens: number[], vocab: number): Float32Array {
  const out = new Float32Array(tokens.length * vocab);
  tokens.forEach((t, i) => {
    for (let v = 0; v < vocab; v++) out[i * vocab + v] = Math.sin(i * 31 + v);
    out[i * vocab + t] = 10;
  });
  return out;
}

describe("greedy verification", () => {
  it("keeps the longest agreeing prefix and appends the target's token at the first mismatch", () => {
    const target = [5, 6, 7, 8];
    assert.deepEqual(
      acceptGreedy([5, 6, 9], (i) => target[i]),
      { accepted: 2, token: 7 },
    );
    assert.deepEqual(
      acceptGreedy([4, 6, 7], (i) => target[i]),
      { accepted: 0, token: 5 },
    );
  });

  it("appends the bonus token when every draft token agrees, and decodes plainly at K = 0", () => {
    const target = [5, 6, 7, 8];
    assert.deepEqual(
      acceptGreedy([5, 6, 7], (i) => target[i]),
      { accepted: 3, token: 8 },
    );
    assert.deepEqual(
      acceptGreedy([], (i) => target[i]),
      { accepted: 0, token: 5 },
    );
  });

  it("reads the argmax of each logits row in verifyRound", () => {
    const round = {
      draftTokens: [3, 1, 2],
      targetLogits: rowsWithArgmax([3, 1, 0, 4], 6),
      vocabSize: 6,
      sampling: { temperature: 0 },
      acceptance: LOSSLESS,
      seed: 1,
      position: 10,
    };
    assert.deepEqual(verifyRound(round), { accepted: 2, token: 0 });
    assert.throws(() => verifyRound({ ...round, draftTokens: [3] }), /expected 2 logits rows/);
  });
});

describe("residual", () => {
  it("is max(0, p − q) over p's vocabulary, ignoring q's ids beyond it", () => {
    const p = Float32Array.of(0.5, 0.25, 0.25);
    const q: SparseDistribution = { ids: Int32Array.of(0, 2, 5), probs: Float32Array.of(0.25, 0.5, 0.25) };
    assert.deepEqual([...residual(p, q)], [0.25, 0.25, 0]);
  });
});

/**
 * A synthetic round: fixed target rows p_0..p_K and draft rows q_0..q_{K−1} (the draft's vocabulary narrower than the
 * target's, as with a padded target). Each trial draws the draft tokens from q with the trial's seed and verifies.
 */
function simulate(
  sampling: SamplingParams,
  trials: number,
  rule: (draft: number[], q: SparseDistribution[], p: Float32Array[], seed: number) => Verdict,
): { p: Float32Array[]; counts: number[][] } {
  const k = 3;
  const targetVocab = 10;
  const draftVocab = 8;
  const targetLogits = Array.from({ length: k + 1 }, (_, i) => {
    const row = Float32Array.from({ length: targetVocab }, (_, v) => 1.5 * Math.sin(3 * i + 1.7 * v + 1));
    return row;
  });
  // The draft is a blurred version of the target (close but not equal), over the first draftVocab ids only.
  const draftLogits = targetLogits
    .slice(0, k)
    .map((row) => Float32Array.from(row.subarray(0, draftVocab), (v, i) => 0.6 * v + 0.4 * Math.cos(i)));
  const p = targetLogits.map((row) => distribution(row, sampling));
  const q = draftLogits.map((row) => sparse(distribution(row, sampling)));
  const counts = p.map(() => new Array(targetVocab).fill(0));
  for (let seed = 0; seed < trials; seed++) {
    const draft = q.map((qi, i) => drawSparse(qi, uniform(seed, i, Stream.draft)));
    const { accepted, token } = rule(draft, q, p, seed);
    const emitted = [...draft.slice(0, accepted), token];
    // Token at position i is a fair sample of p_i only given that the round reached position i: count it there.
    for (const [i, t] of emitted.entries()) counts[i][t]++;
  }
  return { p, counts };
}

const lossless = (draft: number[], q: SparseDistribution[], p: Float32Array[], seed: number) =>
  acceptSpeculative(draft, q, (i) => p[i], { seed, position: 0 });

describe("speculative sampling", () => {
  const settings: [string, SamplingParams][] = [
    ["temperature 1", { temperature: 1 }],
    ["temperature 0.7 with top-k 5", { temperature: 0.7, topK: 5 }],
    ["temperature 1.3 with top-p 0.8", { temperature: 1.3, topP: 0.8 }],
  ];
  for (const [label, sampling] of settings) {
    it(`emits every position with the target's distribution (${label})`, () => {
      const { p, counts } = simulate(sampling, 40_000, lossless);
      counts.forEach((observed, i) => {
        const fit = chiSquareFit(observed, p[i]);
        assert.equal(fit.impossible, 0, `position ${i}: tokens outside p's support`);
        assert.ok(fit.statistic < fit.critical, `position ${i}: chi-square ${fit.statistic} ≥ ${fit.critical}`);
        assert.ok(fit.totalVariation < 0.02, `position ${i}: total variation ${fit.totalVariation}`);
      });
    });
  }

  it("has the power to see a biased rule (correction drawn from p instead of the residual)", () => {
    const biased = (draft: number[], q: SparseDistribution[], p: Float32Array[], seed: number): Verdict => {
      const { accepted } = lossless(draft, q, p, seed);
      return { accepted, token: drawToken(p[accepted], uniform(seed, accepted, Stream.target)) };
    };
    const { p, counts } = simulate({ temperature: 1 }, 40_000, biased);
    const fit = chiSquareFit(counts[0], p[0]);
    assert.ok(fit.statistic > fit.critical, `chi-square ${fit.statistic} should exceed ${fit.critical}`);
  });

  it("accepts a token with probability min(1, p/q)", () => {
    const p = [Float32Array.of(0.3, 0.7), Float32Array.of(0.5, 0.5)];
    const q: SparseDistribution[] = [{ ids: Int32Array.of(0, 1), probs: Float32Array.of(0.6, 0.4) }];
    let acceptedZero = 0;
    let acceptedOne = 0;
    const n = 20_000;
    for (let seed = 0; seed < n; seed++) {
      if (acceptSpeculative([0], q, (i) => p[i], { seed, position: 5 }).accepted === 1) acceptedZero++;
      if (acceptSpeculative([1], q, (i) => p[i], { seed, position: 5 }).accepted === 1) acceptedOne++;
    }
    assert.ok(Math.abs(acceptedZero / n - 0.5) < 0.015, `p/q = 0.5, got ${acceptedZero / n}`);
    assert.equal(acceptedOne, n);
  });

  it("needs the draft distributions in verifyRound", () => {
    assert.throws(
      () =>
        verifyRound({
          draftTokens: [1],
          targetLogits: new Float32Array(8),
          vocabSize: 4,
          sampling: { temperature: 1 },
          acceptance: LOSSLESS,
          seed: 1,
          position: 0,
        }),
      /draft distribution/,
    );
  });
});

describe("relaxed acceptance (lossy)", () => {
  // Row 0 ranks tokens 3 > 1 > 0 > 2; row 1 ranks 0 first.
  const vocab = 4;
  const targetLogits = Float32Array.of(1, 2, 0, 3, 5, 1, 1, 1, 0, 4, 0, 0);
  const base = { targetLogits, vocabSize: vocab, sampling: { temperature: 0 }, seed: 3, position: 0 };

  it("is labelled lossy", () => {
    assert.equal(isLossy(LOSSLESS), false);
    assert.equal(isLossy({ kind: "top-k", k: 2 }), true);
    assert.equal(isLossy({ kind: "typical", epsilon: 0.3, delta: 0.09 }), true);
  });

  it("top-k accepts a draft token among the target's k best, where greedy would reject it", () => {
    const round = { ...base, draftTokens: [1, 0] };
    assert.deepEqual(verifyRound({ ...round, acceptance: LOSSLESS }), { accepted: 0, token: 3 });
    assert.deepEqual(verifyRound({ ...round, acceptance: { kind: "top-k", k: 2 } }), { accepted: 2, token: 1 });
    assert.deepEqual(verifyRound({ ...round, draftTokens: [0, 0], acceptance: { kind: "top-k", k: 2 } }), {
      accepted: 0,
      token: 3,
    });
  });

  it("typical acceptance accepts tokens above min(epsilon, delta·exp(−H))", () => {
    const round = { ...base, draftTokens: [1, 0] };
    const p0 = distribution(targetLogits.subarray(0, vocab), { temperature: 1 });
    assert.ok(p0[1] > 0.2 && p0[0] < 0.2);
    assert.deepEqual(verifyRound({ ...round, acceptance: { kind: "typical", epsilon: 0.2, delta: 1 } }), {
      accepted: 2,
      token: 1,
    });
    assert.deepEqual(
      verifyRound({ ...round, draftTokens: [0, 0], acceptance: { kind: "typical", epsilon: 0.2, delta: 1 } }),
      { accepted: 0, token: 3 },
    );
  });
});
