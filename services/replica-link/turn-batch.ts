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
import { answerAll, type Held } from "../batching/answers.ts";
import { type Publication, publish, publishAll } from "./channels.ts";
import type { RedisClient } from "./redis-target.ts";

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

/**
 * Publishes through `redis`, a turn's messages in at most two writes (on a cluster, two per hash tag: a replica's
 * replies share its tag); resolves with each message's receivers.
 */
export function publisher(redis: RedisClient): TurnBatch<Publication, number> {
  return new TurnBatch(
    (publication) => publish(redis, publication),
    (publications) => publishAll(redis, publications),
  );
}
