import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";

/** Polls `condition` until it holds; fails the test, naming `what`, once `timeoutMs` has passed. */
export async function until(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const giveUp = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > giveUp) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}
