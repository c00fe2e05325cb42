/**
 * When the local stack starts a crashed service again: after a delay that doubles with each crash in the window (a
 * service that dies at once does not spin), and not at all once it has crashed `maxCrashes` times within `windowMs`
 * (something is wrong that restarting will not fix, and the stack stops with a message instead). A service that exits
 * 0 drained on a SIGTERM, as in a rolling restart: it is started again, but that is no crash.
 */
import type { Exit } from "./service-process.ts";

export interface RestartPolicy {
  /** Crashes of one service within the window that stop the stack. */
  readonly maxCrashes: number;
  readonly windowMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = { maxCrashes: 5, windowMs: 60_000 };

/** Also the delay before a service that stopped cleanly is started again. */
export const FIRST_DELAY_MS = 250;
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

/** An exit the crash limit counts: any but a clean one (code 0, which a service gives only after draining). */
export function isCrash(exit: Exit): boolean {
  return exit.signal !== null || exit.code !== 0;
}
