/**
 * The micro-batcher: jobs handed in one by one (from different users) leave as batches, one batch running at a time.
 *
 * When to start a batch is the whole policy:
 * - Jobs handed in during one turn of the event loop (the pushes of one Redis read, every job BullMQ hands over from
 *   one reply) always share a batch: the decision waits for the turn's end (process.nextTick), no longer, so that a
 *   lone job's forward starts in the same loop iteration.
 * - A batch starts at once when it is full, or when it holds every sequence of the last two batches: a lone stream
 *   (batch 1) never waits, and neither does a steady set of streams once all of them are back.
 * - Otherwise (some sequences of recent batches have not sent their next round yet) it waits for them from its oldest
 *   job, so that a set of streams whose rounds arrive a little apart (BullMQ hands jobs over one Redis round trip
 *   after another) is not split into small batches that alternate forever. The wait is at most `maxWaitMs` and at
 *   most `maxWaitShare` of a recent batch's run time: waiting never costs more than a small share of a forward. Jobs left
 *   over from the last batch (it was full) have waited enough: no wait.
 * - While a batch runs, arriving jobs queue up and form the next one.
 */

export interface MicroBatcherOptions<J, R> {
  readonly maxBatchSize: number;
  readonly maxWaitMs: number;
  /** Largest share of a batch's run time (running mean) spent waiting for more jobs; default 0.1. */
  readonly maxWaitShare?: number;
  /** Jobs with the same key (sequence) never share a batch: the second one waits for the next batch. */
  readonly key: (job: J) => string;
  /** Runs one batch: one outcome per job, in order; an Error outcome fails that job alone, a rejection fails all. */
  readonly run: (jobs: J[]) => Promise<(R | Error)[]>;
}

/** Weight of the latest batch in the running mean of run times. */
const RUN_TIME_WEIGHT = 0.2;

interface Pending<J, R> {
  readonly job: J;
  readonly key: string;
  readonly arrived: number;
  readonly resolve: (result: R) => void;
  readonly reject: (error: Error) => void;
}

export class MicroBatcher<J, R> {
  #pending: Pending<J, R>[] = [];
  #running: Promise<void> | undefined;
  #runningSize = 0;
  #timer: NodeJS.Timeout | undefined;
  #decisionScheduled = false;
  /** Keys of the last two batches. */
  #recent: [Set<string>, Set<string>] = [new Set(), new Set()];
  #closing = false;
  /** When the last batch started (performance.now()). */
  #lastStart = Number.NEGATIVE_INFINITY;
  /** Running mean of batch run times, ms (undefined before the first batch: no wait). */
  #runMs: number | undefined;
  #idle: (() => void)[] = [];

  constructor(readonly options: MicroBatcherOptions<J, R>) {
    if (!(Number.isInteger(options.maxBatchSize) && options.maxBatchSize >= 1)) {
      throw new RangeError(`maxBatchSize must be a positive integer, got ${options.maxBatchSize}`);
    }
    if (!(options.maxWaitMs >= 0)) throw new RangeError(`maxWaitMs must be >= 0, got ${options.maxWaitMs}`);
  }

  /** Resolves with the job's result once the batch it joined has run. */
  submit(job: J): Promise<R> {
    if (this.#closing) return Promise.reject(new Error("the batcher is draining and takes no new jobs"));
    return new Promise<R>((resolve, reject) => {
      this.#pending.push({ job, key: this.options.key(job), arrived: performance.now(), resolve, reject });
      this.#schedule();
    });
  }

  /** Stops waiting for these keys (their sequences ended): the next batch need not wait for them. */
  forget(keys: Iterable<string>): void {
    for (const key of keys) for (const set of this.#recent) set.delete(key);
  }

  /** Jobs handed in and waiting for a batch. */
  get waiting(): number {
    return this.#pending.length;
  }

  /** Jobs handed in and not yet finished (waiting or in the running batch). */
  get inHand(): number {
    return this.#pending.length + (this.#running ? this.#runningSize : 0);
  }

  /** Takes no new jobs, runs the ones in hand without waiting, and resolves once none is left. */
  drain(): Promise<void> {
    this.#closing = true;
    this.#decide();
    if (this.inHand === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #schedule(): void {
    if (this.#running || this.#decisionScheduled) return;
    this.#decisionScheduled = true;
    process.nextTick(() => {
      this.#decisionScheduled = false;
      this.#decide();
    });
  }

  #distinctPending(): number {
    return new Set(this.#pending.map((p) => p.key)).size;
  }

  #decide(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#running || this.#pending.length === 0) return;
    const inHand = this.#distinctPending();
    const expected = new Set([...this.#recent[0], ...this.#recent[1], ...this.#pending.map((p) => p.key)]).size;
    const oldest = this.#pending[0].arrived;
    const budget = Math.min(this.options.maxWaitMs, (this.options.maxWaitShare ?? 0.1) * (this.#runMs ?? 0));
    const wait = budget - (performance.now() - oldest);
    const leftOver = oldest < this.#lastStart;
    if (this.#closing || leftOver || inHand >= Math.min(expected, this.options.maxBatchSize) || wait <= 0) {
      this.#start();
      return;
    }
    this.#timer = setTimeout(() => this.#decide(), wait);
  }

  #start(): void {
    const batch: Pending<J, R>[] = [];
    const keys = new Set<string>();
    const rest: Pending<J, R>[] = [];
    for (const p of this.#pending) {
      if (batch.length < this.options.maxBatchSize && !keys.has(p.key)) {
        batch.push(p);
        keys.add(p.key);
      } else rest.push(p);
    }
    this.#pending = rest;
    const started = performance.now();
    this.#lastStart = started;
    this.#recent = [this.#recent[1], keys];
    this.#runningSize = batch.length;
    this.#running = this.#runBatch(batch).finally(() => {
      const ms = performance.now() - started;
      this.#runMs = this.#runMs === undefined ? ms : this.#runMs + RUN_TIME_WEIGHT * (ms - this.#runMs);
      this.#running = undefined;
      this.#runningSize = 0;
      if (this.#pending.length > 0) this.#decide();
      else for (const resolve of this.#idle.splice(0)) resolve();
    });
  }

  async #runBatch(batch: Pending<J, R>[]): Promise<void> {
    let outcomes: (R | Error)[];
    try {
      outcomes = await this.options.run(batch.map((p) => p.job));
      if (outcomes.length !== batch.length) {
        throw new Error(`batch run returned ${outcomes.length} outcomes for ${batch.length} jobs`);
      }
    } catch (error) {
      for (const p of batch) p.reject(error as Error);
      return;
    }
    batch.forEach((p, i) => {
      const outcome = outcomes[i];
      if (outcome instanceof Error) p.reject(outcome);
      else p.resolve(outcome);
    });
  }
}
