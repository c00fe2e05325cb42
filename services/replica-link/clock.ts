/**
 * The clock of a verify job's timestamps (`enqueued_at_unix_ms`, `deadline_unix_ms`): the gateway stamps them, a
 * replica reads them, so both sides take wall-clock epoch milliseconds, with sub-millisecond resolution.
 */
export function nowUnixMs(): number {
  return performance.timeOrigin + performance.now();
}
