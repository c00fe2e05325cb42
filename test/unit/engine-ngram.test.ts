import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { lookupContinuation, NgramDrafter } from "../../services/engine/ngram-drafter.ts";

describe("prompt lookup", () => {
  it("continues after the most recent earlier occurrence of the last n tokens", () => {
    const history = [1, 2, 3, 9, 1, 2, 3, 7, 8, 1, 2, 3];
    assert.deepEqual(lookupContinuation(history, 3, 4), [7, 8, 1, 2]);
    assert.deepEqual(lookupContinuation(history, 3, 1), [7]);
  });

  it("stops at the end of the history and finds nothing without a match", () => {
    assert.deepEqual(lookupContinuation([4, 5, 6, 4, 5], 2, 8), [6, 4, 5]);
    assert.deepEqual(lookupContinuation([1, 2, 3, 4], 2, 3), []);
    assert.deepEqual(lookupContinuation([1], 1, 3), []);
  });
});

describe("NgramDrafter", () => {
  it("proposes from the longest matching suffix, rolls back, and proposes nothing at K = 0", async () => {
    const drafter = new NgramDrafter({ maxNgram: 3, minNgram: 1 });
    await drafter.open({
      sequenceId: "s",
      history: [5, 6, 7, 8, 5, 6, 7, 9, 5, 6],
      sampling: { temperature: 0 },
      seed: 1,
    });
    assert.deepEqual(await drafter.propose([{ sequenceId: "s", k: 0 }]), [{ tokens: [] }]);
    const [draft] = await drafter.propose([{ sequenceId: "s", k: 3 }]);
    assert.deepEqual(draft.tokens, [7, 9, 5]);
    // The target kept one draft token (7) and then said 8.
    drafter.commit("s", 11, [8]);
    const [next] = await drafter.propose([{ sequenceId: "s", k: 2 }]);
    assert.deepEqual(next.tokens, [5, 6]);
    assert.throws(() => drafter.commit("s", 99, []), /cannot keep/);
    drafter.close("s");
    await assert.rejects(drafter.propose([{ sequenceId: "s", k: 1 }]), /unknown sequence/);
  });

  it("gives one-hot distributions when sampling", async () => {
    const drafter = new NgramDrafter();
    await drafter.open({ sequenceId: "s", history: [1, 2, 1], sampling: { temperature: 1 }, seed: 1 });
    const [draft] = await drafter.propose([{ sequenceId: "s", k: 2 }]);
    assert.deepEqual(draft.tokens, [2, 1]);
    assert.deepEqual(
      draft.distributions?.map((q) => [[...q.ids], [...q.probs]]),
      [
        [[2], [1]],
        [[1], [1]],
      ],
    );
  });
});
