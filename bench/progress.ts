/**
 * Progress of a long benchmark phase on stderr: a bar, the step count and an estimate of the time left, projected from
 * the mean time of the steps done so far (the steps of one phase are alike: a prompt's runs, a concurrency level).
 */

const BAR_WIDTH = 20;

/** "1h02m", "3m05s", "42s": short enough for a progress line. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/** The line for `done` of `total` steps after `elapsedMs`: bar, count, percentage, time left once a step is done. */
export function progressLine(done: number, total: number, elapsedMs: number): string {
  const share = total === 0 ? 1 : Math.min(1, done / total);
  const filled = Math.round(share * BAR_WIDTH);
  const bar = `[${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}]`;
  const left = done === 0 ? "" : `, ~${formatDuration((elapsedMs / done) * (total - done))} left`;
  return `${bar} ${done}/${total} (${Math.round(share * 100)}%${left})`;
}

/** A phase of `total` steps; each `step(message)` prints the bar, then what the step measured. */
export class Progress {
  readonly #started = performance.now();
  #done = 0;

  constructor(
    private readonly log: (message: string) => void,
    private readonly total: number,
  ) {}

  step(message: string): void {
    this.#done++;
    this.log(`${progressLine(this.#done, this.total, performance.now() - this.#started)} ${message}`);
  }
}
