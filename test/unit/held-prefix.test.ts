/**
 * The bookkeeping behind verify jobs that carry only what the replica's cache lacks: the rolling prefix hash (extended
 * piece by piece it equals the hash of the whole; any changed, missing or extra token changes it) and the gateway's
 * per-sequence record of what its replica holds (which job goes out full, which as a delta, and with which claim).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { HeldPrefixes } from "../../gateway/held-prefixes.ts";
import type { VerifyJob } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../../gen/specgate/v1/VerifyResult.ts";
import { EMPTY_PREFIX, extendPrefix, samePrefix, toWire } from "../../services/replica-link/held-prefix.ts";

const tokens = Array.from({ length: 300 }, (_, i) => (i * 7919) % 32000);

describe("prefix hash", () => {
  test("extended piece by piece equals the hash of the whole", () => {
    const whole = extendPrefix(EMPTY_PREFIX, tokens);
    let pieces = EMPTY_PREFIX;
    for (const [from, to] of [
      [0, 1],
      [1, 17],
      [17, 17],
      [17, 299],
      [299, 300],
    ]) {
      pieces = extendPrefix(pieces, tokens, from, to);
    }
    assert.ok(samePrefix(whole, pieces));
    assert.equal(whole.length, 300);
  });

  test("any changed, dropped or added token changes it, token 0 included", () => {
    const whole = extendPrefix(EMPTY_PREFIX, tokens);
    const seen = new Set([`${whole.high}:${whole.low}`]);
    for (let i = 0; i < tokens.length; i++) {
      const changed = tokens.slice();
      changed[i] = (changed[i] + 1) % 32000;
      const other = extendPrefix(EMPTY_PREFIX, changed);
      assert.ok(!samePrefix(whole, other), `token ${i} changed`);
      seen.add(`${other.high}:${other.low}`);
    }
    assert.equal(seen.size, tokens.length + 1, "no two of these prefixes share a hash");
    assert.ok(!samePrefix(extendPrefix(EMPTY_PREFIX, [0]), EMPTY_PREFIX));
    assert.notDeepEqual(toWire(extendPrefix(EMPTY_PREFIX, [0, 0])), toWire(extendPrefix(EMPTY_PREFIX, [0])));
    const swapped = [tokens[1], tokens[0], ...tokens.slice(2)];
    assert.ok(!samePrefix(whole, extendPrefix(EMPTY_PREFIX, swapped)));
  });
});

describe("the gateway's record of held prefixes", () => {
  const round = (history: number[]): VerifyJob => ({ sequence_id: "s", round: 1, history, draft_tokens: [1, 2, 3] });
  const result = (accepted: number) => ({ accepted }) as VerifyResult__Output;

  test("a sequence's first job, and any job to another replica, carries the full history", () => {
    const held = new HeldPrefixes();
    const job = round(tokens.slice(0, 10));
    assert.equal(held.jobFor("s", "r0", job), job);
    held.verified("s", "r0", job, result(2));
    const next = round(tokens.slice(0, 13));
    assert.equal(held.jobFor("s", "r1", next), next);
    assert.equal(held.jobFor("t", "r0", next), next, "another sequence");
  });

  test("later jobs carry the history after the held prefix (history + accepted) and its hash", () => {
    const held = new HeldPrefixes();
    let length = 10;
    let accepted = 0;
    held.verified("s", "r0", round(tokens.slice(0, length)), result(accepted));
    for (const next of [3, 1, 0, 2]) {
      // The replica holds the history it verified and the accepted tokens; the next history adds the target's token.
      const heldLength = length + accepted;
      const history = tokens.slice(0, heldLength + 1);
      const sent = held.jobFor("s", "r0", round(history));
      assert.deepEqual(sent.history, [tokens[heldLength]]);
      assert.deepEqual(sent.held_prefix, toWire(extendPrefix(EMPTY_PREFIX, tokens, 0, heldLength)));
      held.verified("s", "r0", round(history), result(next));
      length = history.length;
      accepted = next;
    }
  });

  test("after history_needed the next job is full; after a release the record is gone", () => {
    const held = new HeldPrefixes();
    held.verified("s", "r0", round(tokens.slice(0, 10)), result(1));
    const job = round(tokens.slice(0, 12));
    assert.ok(held.jobFor("s", "r0", job).held_prefix);
    held.missed("s");
    assert.equal(held.jobFor("s", "r0", job), job);
    held.verified("s", "r0", job, result(0));
    const next = round(tokens.slice(0, 13));
    assert.deepEqual(held.jobFor("s", "r0", next).held_prefix, toWire(extendPrefix(EMPTY_PREFIX, tokens, 0, 12)));
    held.forget("s");
    assert.equal(held.jobFor("s", "r0", next), next);
  });

  test("a history no longer than the held prefix goes out full (nothing would follow the prefix)", () => {
    const held = new HeldPrefixes();
    held.verified("s", "r0", round(tokens.slice(0, 10)), result(3));
    const short = round(tokens.slice(0, 13));
    assert.equal(held.jobFor("s", "r0", short), short);
  });
});
