/**
 * Sends what is handed in during one turn of the event loop in at most two Redis writes.
 *
 * The replies of a batch, and the pushes and queue adds of the streams those replies wake, are handed in one after
 * the other from the same turn. One socket write each costs a system call each, and on a loopback hop to an idle
 * process that call is most of the hop. The turn's first item leaves at once (a lone round waits for nothing, not even
 * the BullMQ completion the same turn sends next); the others leave together on process.nextTick, after the turn's
 * promise jobs. (ioredis's own auto-pipelining would hold every command until setImmediate, behind pending I/O.)
 * Unlike the Batcher (services/batching/), a write never waits for the one before it to be answered: that would add a
 * round trip to every write behind it.
 */
import type { Redis } from "ioredis";
import { answerAll, type Held } from "../batching/answers.ts";

export class TurnBatch<I, O> {
  /** Items held for the end of the turn; undefined when nothing was handed in during this turn. */
  #held: Held<I, O>[] | undefined;

  /**
   * `one` sends an item alone; `many` sends several in one write and answers each in order (an Error for an item that
   * failed alone; a rejection fails them all).
   */
  constructor(
    private readonly one: (item: I) => Promise<O>,
    private readonly many: (items: I[]) => Promise<(O | Error)[]>,
  ) {}

  send(item: I): Promise<O> {
    if (this.#held === undefined) {
      this.#held = [];
      process.nextTick(() => this.#flush());
      return this.one(item);
    }
    const held = this.#held;
    return new Promise((resolve, reject) => held.push({ item, resolve, reject }));
  }

  #flush(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    if (held.length > 0) void answerAll(held, (items) => this.many(items));
  }
}

/** A message for a pub/sub channel. */
export interface Publication {
  readonly channel: string;
  readonly message: Buffer;
}

/** Publishes through `redis`, a turn's messages in at most two writes; resolves with each message's receivers. */
export function publisher(redis: Redis): TurnBatch<Publication, number> {
  return new TurnBatch(
    ({ channel, message }) => redis.publish(channel, message),
    async (publications) => {
      const pipeline = redis.pipeline();
      for (const { channel, message } of publications) pipeline.publish(channel, message);
      const results = (await pipeline.exec()) ?? [];
      return publications.map((_, i) => {
        const [error, receivers] = results[i] ?? [new Error("no reply to a pipelined publish"), 0];
        return error ?? (receivers as number);
      });
    },
  );
}
