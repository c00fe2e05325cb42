/**
 * What processes spend while the benchmark runs, from Linux's per-thread scheduler statistics
 * (/proc/<pid>/task/<tid>/schedstat: nanoseconds on a CPU, nanoseconds runnable but waiting for one, times it got
 * one). Summed over each process's threads. A message that has arrived waits until its process is on a core again:
 * the wait counts that time, whether other processes held the cores or a virtual CPU was still waking up. Undefined
 * where /proc does not offer the statistics (not Linux, or no schedstats).
 */
import { readdirSync, readFileSync } from "node:fs";

export interface ProcessUsage {
  /** Time on a CPU, all threads. */
  readonly cpuMs: number;
  /** Time runnable but waiting for a CPU, all threads. */
  readonly waitMs: number;
  /** Times a thread was put on a CPU. */
  readonly slices: number;
}

/** Parses one schedstat line: "<on-cpu ns> <waiting ns> <timeslices>". */
export function parseSchedstat(line: string): ProcessUsage {
  const [run, wait, slices] = line.trim().split(/\s+/).map(Number);
  if (![run, wait, slices].every(Number.isFinite)) throw new Error(`not a schedstat line: "${line.trim()}"`);
  return { cpuMs: run / 1e6, waitMs: wait / 1e6, slices };
}

const NONE: ProcessUsage = { cpuMs: 0, waitMs: 0, slices: 0 };

/** a + sign · b, field by field. */
function combine(a: ProcessUsage, b: ProcessUsage, sign: 1 | -1 = 1): ProcessUsage {
  return { cpuMs: a.cpuMs + sign * b.cpuMs, waitMs: a.waitMs + sign * b.waitMs, slices: a.slices + sign * b.slices };
}

/** The process's usage so far (threads that have ended are not counted), or undefined when unavailable. */
export function processUsage(pid: number): ProcessUsage | undefined {
  let threads: string[];
  try {
    threads = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  let total = NONE;
  for (const tid of threads) {
    let line: string;
    try {
      line = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8");
    } catch {
      // The thread ended meanwhile, or schedstats are off.
      continue;
    }
    total = combine(total, parseSchedstat(line));
  }
  return total.slices > 0 ? total : undefined;
}

/** Sums usage over measured intervals, per named process: `measure` brackets one interval. */
export class UsageMeter {
  readonly #processes: ReadonlyMap<string, number>;
  readonly #totals = new Map<string, ProcessUsage>();

  /** `processes`: name → pid. */
  constructor(processes: ReadonlyMap<string, number>) {
    this.#processes = processes;
  }

  async measure<T>(interval: () => Promise<T>): Promise<T> {
    const before = new Map([...this.#processes].map(([name, pid]) => [name, processUsage(pid)]));
    const result = await interval();
    for (const [name, pid] of this.#processes) {
      const start = before.get(name);
      const end = processUsage(pid);
      if (start === undefined || end === undefined) continue;
      this.#totals.set(name, combine(this.#totals.get(name) ?? NONE, combine(end, start, -1)));
    }
    return result;
  }

  /** Totals per process over every measured interval (processes whose statistics could not be read are left out). */
  totals(): ReadonlyMap<string, ProcessUsage> {
    return this.#totals;
  }
}
