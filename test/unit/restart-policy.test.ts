import assert from "node:assert/strict";
import { test } from "node:test";
import { isCrash, restartDecision } from "../../deploy/restart-policy.ts";

const POLICY = { maxCrashes: 5, windowMs: 60_000 };

test("a crash is restarted after a delay that doubles with each crash in the window", () => {
  const crashes: number[] = [];
  const delays: number[] = [];
  for (let i = 0; i < 4; i++) {
    const now = 1_000 * i;
    const decision = restartDecision(crashes, now, POLICY);
    assert.ok(decision.restart, `crash ${i + 1} is restarted`);
    assert.equal(decision.crashesInWindow, i + 1);
    delays.push(decision.delayMs);
    crashes.push(now);
  }
  assert.deepEqual(delays, [250, 500, 1_000, 2_000]);
});

test("the fifth crash within the window gives up; crashes older than the window are forgotten", () => {
  assert.deepEqual(restartDecision([0, 1, 2, 3], 4, POLICY), { restart: false, crashesInWindow: 5 });
  const later = restartDecision([0, 1, 2, 3], 60_003, POLICY);
  assert.deepEqual(later, { restart: true, delayMs: 250, crashesInWindow: 1 });
  assert.deepEqual(restartDecision([0, 1, 2, 3], 60_002, POLICY), { restart: true, delayMs: 500, crashesInWindow: 2 });
});

test("the delay is capped, and a limit of one crash never restarts", () => {
  const many = Array.from({ length: 20 }, (_, i) => i);
  const decision = restartDecision(many, 20, { maxCrashes: 100, windowMs: 60_000 });
  assert.ok(decision.restart);
  assert.equal(decision.delayMs, 8_000);
  assert.equal(restartDecision([], 0, { maxCrashes: 1, windowMs: 60_000 }).restart, false);
});

test("a drained exit (code 0) is no crash; any other code or a signal is", () => {
  assert.equal(isCrash({ code: 0, signal: null }), false);
  assert.equal(isCrash({ code: 1, signal: null }), true);
  assert.equal(isCrash({ code: null, signal: "SIGKILL" }), true);
  assert.equal(isCrash({ code: null, signal: "SIGTERM" }), true, "killed before it could drain");
});
