import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { TreeShape } from "../../services/engine/drafter.ts";
import type { KPolicy } from "../../services/engine/k-policy.ts";
import { type RoundOutcome, SpeculativeSequence } from "../../services/engine/round.ts";
import { SequenceState } from "../../services/engine/sequence.ts";
import { ROOT, type TokenTree, tokenTree } from "../../services/engine/token-tree.ts";
import type { TreeShaper } from "../../services/engine/tree-policy.ts";

/** A K policy that records what it was told. */
class ObservedK implements KPolicy {
  readonly observed: [number, number][] = [];
  asked = 0;
  constructor(
    private readonly k: number,
    readonly maxK = k,
  ) {}
  nextK(): number {
    this.asked++;
    return this.k;
  }
  observe(proposed: number, accepted: number): void {
    this.observed.push([proposed, accepted]);
  }
}

function speculating(k: number, maxNewTokens = 20) {
  const policy = new ObservedK(k);
  const rolledBack: RoundOutcome[] = [];
  const speculation = new SpeculativeSequence(
    new SequenceState([1, 5], { maxNewTokens, contextLength: 64, eosTokenId: 2 }),
    policy,
    { rollBack: (outcome) => rolledBack.push(outcome) },
  );
  return { speculation, policy, rolledBack };
}

describe("SpeculativeSequence (one round step)", () => {
  it("commits the accepted draft prefix and the target's token, and tells the policy and the drafter", () => {
    const { speculation, policy, rolledBack } = speculating(4);
    const plan = speculation.plan();
    assert.deepEqual(plan, { round: 1, k: 4 });
    const outcome = speculation.accept(plan, { tokens: [10, 11, 12, 13] }, { accepted: 2, token: 20 });
    assert.deepEqual(outcome.committed.tokens, [10, 11, 20]);
    assert.deepEqual(speculation.sequence.tokens, [1, 5, 10, 11, 20]);
    assert.equal(outcome.historyLength, 2);
    assert.deepEqual(policy.observed, [[4, 2]]);
    speculation.rollBack(outcome);
    assert.deepEqual(rolledBack, [outcome]);
    speculation.record(outcome, 3, 7);
    const { stats } = speculation;
    assert.equal(stats.rounds, 1);
    assert.equal(stats.generated_tokens, 3);
    assert.equal(stats.draft_tokens, 4);
    assert.equal(stats.accepted_tokens, 2);
    assert.equal(stats.rejected_tokens, 1);
    assert.deepEqual(stats.k_per_round, [4]);
    assert.equal(stats.draft_time_ms, 3);
    assert.equal(stats.verify_time_ms, 7);
    assert.equal(speculation.plan().round, 2);
  });

  it("keeps K within what the sequence may still add", () => {
    const { speculation } = speculating(8, 3);
    assert.equal(speculation.plan().k, 2);
  });

  it("records a round whose draft never came as K = 0", () => {
    const { speculation, policy } = speculating(4);
    const outcome = speculation.accept(speculation.plan(), undefined, { accepted: 0, token: 20 });
    assert.equal(outcome.k, 0);
    assert.equal(outcome.proposed, 0);
    assert.deepEqual(policy.observed, [[0, 0]]);
  });

  it("never accepts more than was drafted", () => {
    const { speculation } = speculating(2);
    const outcome = speculation.accept(speculation.plan(), { tokens: [10, 11] }, { accepted: 5, token: 20 });
    assert.equal(outcome.accepted, 2);
    assert.deepEqual(outcome.committed.tokens, [10, 11, 20]);
  });

  it("leaves the drafter alone once the round ended the sequence", () => {
    const { speculation, rolledBack } = speculating(4);
    const outcome = speculation.accept(speculation.plan(), { tokens: [10, 2, 12] }, { accepted: 3, token: 20 });
    assert.deepEqual(outcome.committed.tokens, [10, 2]);
    assert.equal(speculation.sequence.finishReason, "eos");
    speculation.rollBack(outcome);
    assert.deepEqual(rolledBack, []);
  });

  it("without a drafter runs plain decoding and never asks the policy", () => {
    const policy = new ObservedK(4);
    const speculation = new SpeculativeSequence(new SequenceState([1], { maxNewTokens: 5, contextLength: 64 }), policy);
    const plan = speculation.plan();
    assert.equal(plan.k, 0);
    assert.equal(policy.asked, 0);
    const outcome = speculation.accept(plan, { tokens: [] }, { accepted: 0, token: 7 });
    speculation.rollBack(outcome);
    assert.deepEqual(speculation.sequence.generated, [7]);
  });

  it("asks the tree shape policy for each round's tree within the K limit and tells it every outcome", () => {
    const asked: [number, number][] = [];
    const trees: [TokenTree, readonly number[], TreeShape | undefined][] = [];
    const chains: [number, number, number][] = [];
    const shaper: TreeShaper = {
      choose: (k, maxDepth) => {
        asked.push([k, maxDepth]);
        return asked.length === 1 ? { depth: 3, width: 2, nodes: 5 } : undefined;
      },
      observeTree: (tree, path, asked) => trees.push([tree, path, asked]),
      observeChain: (k, proposed, accepted) => chains.push([k, proposed, accepted]),
    };
    const policy = new ObservedK(2, 6);
    const speculation = new SpeculativeSequence(
      new SequenceState([1, 5], { maxNewTokens: 20, contextLength: 64 }),
      policy,
      { rollBack: () => {} },
      shaper,
    );
    const first = speculation.plan();
    assert.deepEqual(first, { round: 1, k: 3, branching: { width: 2, nodes: 5 } });
    // The favourites 10 → 12 → 13, and 12's second child 14 accepted.
    const tree = tokenTree([10, 11, 12, 13, 14], [ROOT, ROOT, 0, 2, 2]);
    speculation.accept(first, { tree }, { accepted: 3, token: 20, path: [0, 2, 4] });
    assert.deepEqual(trees, [[tree, [0, 2, 4], { depth: 3, width: 2, nodes: 5 }]]);
    assert.deepEqual(policy.observed, [[3, 2]], "the K policy learns what the chain of favourites kept");
    const second = speculation.plan();
    assert.deepEqual(second, { round: 2, k: 2 });
    speculation.accept(second, { tokens: [30, 31] }, { accepted: 1, token: 21 });
    // A round that asked for a draft and got none (the draft service down) teaches nothing about branching.
    speculation.accept(speculation.plan(), undefined, { accepted: 0, token: 22 });
    assert.deepEqual(chains, [[2, 2, 1]]);
    assert.deepEqual(asked, [
      [2, 6],
      [2, 6],
      [2, 6],
    ]);
    // Near the end the sequence's room bounds the tree's depth.
    const ending = new SpeculativeSequence(
      new SequenceState([1, 5], { maxNewTokens: 4, contextLength: 64 }),
      new ObservedK(2, 6),
      { rollBack: () => {} },
      shaper,
    );
    ending.plan();
    assert.deepEqual(asked.at(-1), [2, 3]);
  });
});
