/**
 * The batcher: items handed in one by one (for different sequences) leave as batches, one batch running at a time.
 * The target's micro-batcher (verify jobs) and the draft service's proposals per drafter are both this.
 *
 * When to start a batch is the whole policy:
 * - With `shareTurn`, items handed in during one turn of the event loop (the pushes of one Redis read, every job
 *   BullMQ hands over from one reply) always share a batch: the decision waits for the turn's end (process.nextTick),
 *   no longer, so that a lone item's run starts in the same loop iteration. Without it an idle batcher starts at once,
 *   inside `submit`, with the one item handed in.
 * - A batch starts at once when it is full, or when it holds every key of the last two batches: a lone stream
 *   (batch 1) never waits, and neither does a steady set of streams once all of them are back.
 * - Otherwise (some sequences of recent batches have not sent their next round yet) it waits for them from its oldest
 *   item, so that a set of streams whose rounds arrive a little apart (BullMQ hands jobs over one Redis round trip
 *   after another) is not split into small batches that alternate forever. The wait is at most `maxWaitMs` (default 0:
 *   never) and at most `maxWaitShare` of a recent batch's run time: waiting never costs more than a small share of a
 *   forward. Items left over from the last batch (it was full) have waited enough: no wait.
 * - While a batch runs, arriving items queue up and form the next one: under load batches grow by themselves, and an
 *   idle batcher adds no latency.
 */
import { answerAll, type Held } from "./answers.ts";

export interface BatcherOptions<I, O> {
  /** Whether the items of one event-loop turn share a batch (the decision waits for the turn's end) or not. */
  readonly shareTurn: boolean;
  /** Default: no cap. */
  readonly maxBatchSize?: number;
  /** Default 0: a batch never waits for absent sequences. */
  readonly maxWaitMs?: number;
  /** Largest share of a batch's run time (running mean) spent waiting for more items; default 0.1. */
  readonly maxWaitShare?: number;
  /** Items with the same key (sequence) never share a batch: the second one waits for the next batch. */
  readonly key: (item: I) => string;
  /** Runs one batch: one outcome per item, in order; an Error outcome fails that item alone, a rejection fails all. */
  readonly run: (items: I[]) => Promise<(O | Error)[]>;
}

/** Weight of the latest batch in the running mean of run times. */
const RUN_TIME_WEIGHT = 0.2;

interface Pending<I, O> extends Held<I, O> {
  readonly key: string;
  readonly arrived: number;
}

export class Batcher<I, O> {
  readonly #maxBatchSize: number;
  readonly #maxWaitMs: number;
  #pending: Pending<I, O>[] = [];
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

  constructor(readonly options: BatcherOptions<I, O>) {
    const { maxBatchSize = Number.POSITIVE_INFINITY, maxWaitMs = 0 } = options;
    if (!(maxBatchSize >= 1 && (Number.isInteger(maxBatchSize) || maxBatchSize === Number.POSITIVE_INFINITY))) {
      throw new RangeError(`maxBatchSize must be a positive integer, got ${maxBatchSize}`);
    }
    if (!(maxWaitMs >= 0)) throw new RangeError(`maxWaitMs must be >= 0, got ${maxWaitMs}`);
    this.#maxBatchSize = maxBatchSize;
    this.#maxWaitMs = maxWaitMs;
  }

  /** Resolves with the item's outcome once the batch it joined has run. */
  submit(item: I): Promise<O> {
    if (this.#closing) return Promise.reject(new Error("the batcher is draining and takes no new jobs"));
    return new Promise<O>((resolve, reject) => {
      this.#pending.push({ item, key: this.options.key(item), arrived: performance.now(), resolve, reject });
      this.#schedule();
    });
  }

  /** Stops waiting for these keys (their sequences ended): the next batch need not wait for them. */
  forget(keys: Iterable<string>): void {
    for (const key of keys) for (const set of this.#recent) set.delete(key);
  }

  /** Items handed in and waiting for a batch. */
  get waiting(): number {
    return this.#pending.length;
  }

  /** Items handed in and not yet finished (waiting or in the running batch). */
  get inHand(): number {
    return this.#pending.length + (this.#running ? this.#runningSize : 0);
  }

  /** Takes no new items, runs the ones in hand without waiting, and resolves once none is left. */
  drain(): Promise<void> {
    this.#closing = true;
    this.#decide();
    if (this.inHand === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #schedule(): void {
    if (this.#running || this.#decisionScheduled) return;
    if (!this.options.shareTurn) {
      this.#decide();
      return;
    }
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
    const budget = Math.min(this.#maxWaitMs, (this.options.maxWaitShare ?? 0.1) * (this.#runMs ?? 0));
    const wait = budget - (performance.now() - oldest);
    const leftOver = oldest < this.#lastStart;
    if (this.#closing || leftOver || inHand >= Math.min(expected, this.#maxBatchSize) || wait <= 0) {
      this.#start();
      return;
    }
    this.#timer = setTimeout(() => this.#decide(), wait);
  }

  #start(): void {
    const batch: Pending<I, O>[] = [];
    const keys = new Set<string>();
    const rest: Pending<I, O>[] = [];
    for (const p of this.#pending) {
      if (batch.length < this.#maxBatchSize && !keys.has(p.key)) {
        batch.push(p);
        keys.add(p.key);
      } else rest.push(p);
    }
    this.#pending = rest;
    const started = performance.now();
    this.#lastStart = started;
    this.#recent = [this.#recent[1], keys];
    this.#runningSize = batch.length;
    this.#running = answerAll(batch, (items) => this.options.run(items)).finally(() => {
      const ms = performance.now() - started;
      this.#runMs = this.#runMs === undefined ? ms : this.#runMs + RUN_TIME_WEIGHT * (ms - this.#runMs);
      this.#running = undefined;
      this.#runningSize = 0;
      if (this.#pending.length > 0) this.#decide();
      else for (const resolve of this.#idle.splice(0)) resolve();
    });
  }
}
