/**
 * Stop strings matched on generated text, across token boundaries: a stop string may arrive split over several
 * tokens, so text that could be the beginning of one is held back until it either completes the stop string or
 * turns out not to.
 */

export interface StopScan {
  /** Index in the text where the earliest stop string begins, or -1 when none occurs. */
  readonly stopIndex: number;
  /** The stop string found at `stopIndex` (undefined when none occurs). */
  readonly stop: string | undefined;
  /**
   * Length of the prefix of the text that can be emitted now: the text before the stop string when one occurs
   * (the stop string itself is not emitted), otherwise all but the longest suffix that begins some stop string.
   */
  readonly safeLength: number;
}

/**
 * Scans `text` (all text generated so far) for `stops`. `from` is where earlier scans left off (their `safeLength`):
 * no stop string can begin before it, so the search starts there and repeated scans stay linear.
 */
export function scanStops(text: string, stops: readonly string[], from = 0): StopScan {
  let stopIndex = -1;
  let stop: string | undefined;
  for (const candidate of stops) {
    if (candidate.length === 0) continue;
    const at = text.indexOf(candidate, from);
    if (at >= 0 && (stopIndex < 0 || at < stopIndex || (at === stopIndex && candidate.length > (stop?.length ?? 0)))) {
      stopIndex = at;
      stop = candidate;
    }
  }
  if (stopIndex >= 0) return { stopIndex, stop, safeLength: stopIndex };

  let held = 0;
  for (const candidate of stops) {
    for (let k = Math.min(candidate.length - 1, text.length); k > held; k--) {
      if (text.endsWith(candidate.slice(0, k))) {
        held = k;
        break;
      }
    }
  }
  return { stopIndex: -1, stop: undefined, safeLength: text.length - held };
}

/** Streaming form of `scanStops`: feed text deltas, get the text that is safe to emit. */
export class StopFilter {
  private text = "";
  private emitted = 0;
  private stoppedAt: string | undefined;

  constructor(private readonly stops: readonly string[]) {}

  /** The stop string that ended generation, once one has matched. */
  get stop(): string | undefined {
    return this.stoppedAt;
  }

  /** Adds generated text; returns what can be emitted now and whether generation must stop. */
  push(delta: string): { text: string; stopped: boolean } {
    if (this.stoppedAt !== undefined) return { text: "", stopped: true };
    this.text += delta;
    const scan = scanStops(this.text, this.stops, this.emitted);
    const text = this.text.slice(this.emitted, scan.safeLength);
    this.emitted = scan.safeLength;
    this.stoppedAt = scan.stop;
    return { text, stopped: scan.stop !== undefined };
  }

  /** Text held back at the end of generation (it did not become a stop string). */
  flush(): string {
    if (this.stoppedAt !== undefined) return "";
    const rest = this.text.slice(this.emitted);
    this.emitted = this.text.length;
    return rest;
  }
}
