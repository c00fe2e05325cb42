/**
 * When the local stack starts a crashed service again: after a delay that doubles with each crash in the window (a
 * service that dies at once does not spin), and not at all once it has crashed `maxCrashes` times within `windowMs`
 * (something is wrong that restarting will not fix, and the stack stops with a message instead).
 */

export interface RestartPolicy {
  /** Crashes of one service within the window that stop the stack. */
  readonly maxCrashes: number;
  readonly windowMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = { maxCrashes: 5, windowMs: 60_000 };

const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 8_000;

export type RestartDecision =
  | { readonly restart: true; readonly delayMs: number; readonly crashesInWindow: number }
  | { readonly restart: false; readonly crashesInWindow: number };

/** What to do after a crash at `now`, given the service's earlier crash times (ms, any order). */
export function restartDecision(earlier: readonly number[], now: number, policy: RestartPolicy): RestartDecision {
  const crashesInWindow = 1 + earlier.filter((t) => now - t < policy.windowMs).length;
  if (crashesInWindow >= policy.maxCrashes) return { restart: false, crashesInWindow };
  return {
    restart: true,
    delayMs: Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (crashesInWindow - 1)),
    crashesInWindow,
  };
}
