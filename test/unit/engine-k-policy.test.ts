import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  AdaptiveK,
  bestK,
  CostModel,
  expectedTokensPerRound,
  FixedK,
  type RoundCosts,
  updateAlpha,
} from "../../services/engine/k-policy.ts";

const flat = (draftStepMs: number, verify = 10): RoundCosts => ({
  draftMs: (forwards) => forwards * draftStepMs,
  verifyMs: () => verify,
});

describe("expected tokens per round", () => {
  it("is (1 − α^(K+1)) / (1 − α), K + 1 at α = 1 and 1 at K = 0", () => {
    assert.ok(Math.abs(expectedTokensPerRound(0.8, 4) - (1 - 0.8 ** 5) / 0.2) < 1e-12);
    assert.equal(expectedTokensPerRound(1, 4), 5);
    assert.equal(expectedTokensPerRound(0.3, 0), 1);
  });
});

describe("bestK", () => {
  it("speculates long when drafting is cheap and acceptance high", () => {
    assert.equal(bestK(0.95, flat(0.01), 0, 8), 8);
  });

  it("chooses K = 0 when a draft step costs as much as verifying", () => {
    assert.equal(bestK(0.5, flat(10), 0, 8), 0);
  });

  it("prefers a shorter K when the verify cost grows with the positions scored", () => {
    const steep: RoundCosts = { draftMs: (forwards) => 0.1 * forwards, verifyMs: (n) => 10 * n ** 1.5 };
    const k = bestK(0.8, steep, 0, 8);
    assert.ok(k < bestK(0.8, flat(0.1), 0, 8));
    assert.ok(k >= 0 && k <= 2, `K = ${k}`);
  });

  it("stays within the bounds", () => {
    assert.equal(bestK(0.1, flat(10), 2, 8), 2);
    assert.equal(bestK(0.99, flat(0), 0, 3), 3);
  });
});

describe("CostModel", () => {
  it("fits a line through the verify times, flat until two different position counts are known", () => {
    const costs = new CostModel();
    costs.recordVerify(1, 10);
    costs.recordVerify(1, 12);
    assert.ok(Math.abs(costs.verifyMs(5) - costs.verifyMs(1)) < 1e-9);
    for (let i = 0; i < 20; i++) {
      costs.recordVerify(1, 10);
      costs.recordVerify(5, 14);
    }
    assert.ok(Math.abs(costs.verifyMs(3) - 12) < 0.1, `${costs.verifyMs(3)}`);
    assert.ok(Math.abs(costs.verifyMs(9) - 18) < 0.2, `${costs.verifyMs(9)}`);
  });

  it("prices a chain step from chain rounds alone, and a tree's extra positions from tree rounds", () => {
    const costs = new CostModel();
    for (let i = 0; i < 8; i++) costs.recordDraft(6, 3, 3);
    assert.equal(costs.draftMs(1, 1), 2);
    assert.equal(costs.draftMs(4, 40), 8, "positions beyond one per forward are free until a tree is timed");
    // Trees of 4 forwards feeding 40 positions at 0.1 ms per extra position: the chain step stays 2 ms.
    for (let i = 0; i < 100; i++) costs.recordDraft(8 + 0.1 * 36, 4, 40);
    assert.equal(costs.draftMs(1, 1), 2);
    assert.ok(Math.abs(costs.draftMs(4, 40) - 11.6) < 0.01, `${costs.draftMs(4, 40)}`);
  });

  it("never lets scoring more positions cost less", () => {
    const costs = new CostModel({
      verifySamples: [
        [2, 20],
        [6, 10],
      ],
    });
    assert.equal(costs.verifyLine().slope, 0);
  });

  it("tracks changing costs as a moving average", () => {
    const costs = new CostModel({ draftStepMs: 1 });
    for (let i = 0; i < 100; i++) costs.recordDraft(3, 1, 1);
    assert.ok(Math.abs(costs.draftMs(1, 1) - 3) < 0.1);
  });
});

/** Measured costs: draft step `draftStepMs`, verify(n) = intercept + slope·n. */
function measured(draftStepMs: number, intercept: number, slope: number): CostModel {
  return new CostModel({
    draftStepMs,
    verifySamples: [
      [1, intercept + slope],
      [11, intercept + 11 * slope],
    ],
  });
}

describe("AdaptiveK", () => {
  it("raises K as a sequence's acceptance shows high and lowers it to 0 when it collapses", () => {
    const policy = new AdaptiveK({ kind: "adaptive", kMin: 0, kMax: 10, initialAlpha: 0.5 }, measured(1, 10, 0.5));
    const start = policy.nextK();
    for (let i = 0; i < 50; i++) policy.observe(4, 4);
    assert.ok(policy.alpha > 0.9);
    const high = policy.nextK();
    assert.ok(high > start && high <= 10, `K ${start} → ${high}`);
    for (let i = 0; i < 200; i++) policy.observe(1, 0);
    assert.ok(policy.alpha < 0.1);
    assert.equal(policy.nextK(), 0);
  });

  it("starts a new sequence from the acceptance the pair has shown", () => {
    const costs = measured(0.1, 10, 0.5);
    const first = new AdaptiveK({ kind: "adaptive", kMin: 0, kMax: 10, initialAlpha: 0.5 }, costs);
    for (let i = 0; i < 100; i++) first.observe(4, 4);
    const second = new AdaptiveK({ kind: "adaptive", kMin: 0, kMax: 10, initialAlpha: 0.5 }, costs);
    assert.ok(second.alpha > 0.9, `${second.alpha}`);
  });

  it("resumes speculating after a hard stretch as its estimate returns to the pair's acceptance", () => {
    const costs = measured(5, 10, 0.5);
    costs.alpha = 0.9;
    const policy = new AdaptiveK({ kind: "adaptive", kMin: 0, kMax: 10, probeEvery: 1000 }, costs);
    for (let i = 0; i < 60; i++) policy.observe(1, 0);
    costs.alpha = 0.9;
    assert.equal(policy.nextK(), 0);
    let rounds = 0;
    while (policy.nextK() === 0 && rounds < 100) {
      policy.observe(0, 0);
      rounds++;
    }
    assert.ok(rounds > 5 && rounds < 100, `resumed after ${rounds} plain rounds`);
  });

  it("probes with K = 1 while at K = 0, waiting twice as long after each probe", () => {
    const policy = new AdaptiveK(
      { kind: "adaptive", kMin: 0, kMax: 4, initialAlpha: 0, probeEvery: 4 },
      measured(5, 10, 0),
    );
    const ks = Array.from({ length: 16 }, () => policy.nextK());
    assert.deepEqual(ks, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
  });

  it("counts only judged draft tokens: none after the first rejection", () => {
    assert.equal(updateAlpha(0.5, 8, 2, 0.1), updateAlpha(0.5, 3, 2, 0.1));
    assert.ok(updateAlpha(0.5, 3, 3, 0.1) > 0.5);
    assert.ok(updateAlpha(0.5, 3, 0, 0.1) < 0.5);
  });

  it("fixed K never changes", () => {
    const policy = new FixedK(3);
    policy.observe(3, 0);
    assert.equal(policy.nextK(), 3);
  });
});
