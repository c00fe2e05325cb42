import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { aggregateStats, emptyStats, recordRound } from "../../services/engine/stats.ts";

describe("speculation statistics", () => {
  it("counts rounds, tokens, acceptance per position and K per round", () => {
    const stats = emptyStats();
    recordRound(stats, { k: 3, proposed: 3, accepted: 1, emitted: 2, draftMs: 1, verifyMs: 10 });
    recordRound(stats, { k: 4, proposed: 2, accepted: 2, emitted: 3, draftMs: 2, verifyMs: 11 });
    recordRound(stats, { k: 0, proposed: 0, accepted: 0, emitted: 1, draftMs: 0, verifyMs: 9 });
    assert.equal(stats.rounds, 3);
    assert.equal(stats.draft_tokens, 5);
    assert.equal(stats.accepted_tokens, 3);
    assert.equal(stats.generated_tokens, 6);
    assert.equal(stats.alpha, 3 / 5);
    assert.equal(stats.rejected_tokens, 1);
    assert.equal(stats.alpha_per_token, 3 / 4);
    assert.equal(stats.mean_accepted_per_round, 1);
    assert.equal(stats.tokens_per_round, 2);
    assert.deepEqual(stats.proposed_per_position, [2, 2, 1]);
    assert.deepEqual(stats.accepted_per_position, [2, 1, 0]);
    assert.deepEqual(stats.acceptance_per_position, [1, 0.5, 0]);
    assert.deepEqual(stats.k_histogram, [1, 0, 0, 1, 1]);
    assert.deepEqual(stats.k_per_round, [3, 4, 0]);
    assert.equal(stats.draft_time_ms, 3);
    assert.equal(stats.verify_time_ms, 30);
  });

  it("aggregates requests by summing counters and recomputing ratios", () => {
    const a = recordRound(emptyStats(), { k: 2, proposed: 2, accepted: 2, emitted: 3, draftMs: 1, verifyMs: 1 });
    const b = recordRound(emptyStats(), { k: 2, proposed: 2, accepted: 0, emitted: 1, draftMs: 1, verifyMs: 1 });
    const total = aggregateStats([a, b]);
    assert.equal(total.rounds, 2);
    assert.equal(total.alpha, 0.5);
    assert.equal(total.alpha_per_token, 2 / 3);
    assert.deepEqual(total.acceptance_per_position, [0.5, 0.5]);
    assert.deepEqual(total.k_histogram, [0, 0, 2]);
    assert.equal("k_per_round" in total, false);
    assert.equal(JSON.parse(JSON.stringify(total)).mean_accepted_per_round, 1);
  });
});
