/**
 * Pub/sub on specgate's Redis. On a cluster, the sharded kind (SPUBLISH/SSUBSCRIBE, Redis 7): a message goes to the
 * shard that owns its channel's slot only, where plain PUBLISH is broadcast over the cluster bus to every node, and
 * SPUBLISH counts that shard's listeners, which the gateway's "nobody heard the push" rule reads (plain PUBLISH on a
 * cluster counts only the listeners of the node it was sent to). On a single node both kinds behave the same, and
 * the plain one needs no Redis 7 command there.
 */
import type { RedisClient } from "./redis-target.ts";

/** A message for a pub/sub channel. */
export interface Publication {
  readonly channel: string;
  readonly message: Buffer;
}

/** Publishes; resolves with the number of listeners that received the message. */
export function publish(redis: RedisClient, { channel, message }: Publication): Promise<number> {
  // ioredis types SPUBLISH's reply loosely; Redis answers with the count, as for PUBLISH.
  return redis.isCluster ? (redis.spublish(channel, message) as Promise<number>) : redis.publish(channel, message);
}

/**
 * Publishes several messages in one write (on a cluster, one per hash tag: a pipeline there must stay within one
 * node, and channels sharing a tag share a slot); resolves with each message's listeners, or its Error.
 */
export async function publishAll(
  redis: RedisClient,
  publications: readonly Publication[],
): Promise<(number | Error)[]> {
  const groups = new Map<string, number[]>();
  publications.forEach(({ channel }, i) => {
    const group = redis.isCluster ? hashTag(channel) : "";
    groups.set(group, [...(groups.get(group) ?? []), i]);
  });
  const outcomes: (number | Error)[] = [];
  await Promise.all(
    [...groups.values()].map(async (indices) => {
      const pipeline = redis.pipeline();
      for (const i of indices) {
        const { channel, message } = publications[i];
        if (redis.isCluster) pipeline.spublish(channel, message);
        else pipeline.publish(channel, message);
      }
      const results = (await pipeline.exec()) ?? [];
      indices.forEach((index, j) => {
        const [error, receivers] = results[j] ?? [new Error("no reply to a pipelined publish"), 0];
        outcomes[index] = error ?? (receivers as number);
      });
    }),
  );
  return outcomes;
}

/** Subscribes `redis` (a connection given over to listening) to the channel. */
export async function subscribe(redis: RedisClient, channel: string): Promise<void> {
  await (redis.isCluster ? redis.ssubscribe(channel) : redis.subscribe(channel));
}

/** Hands each message received by `redis` to `handler`. */
export function onMessage(redis: RedisClient, handler: (channel: Buffer, message: Buffer) => void): void {
  redis.on(redis.isCluster ? "smessageBuffer" : "messageBuffer", handler);
}

/** The part of a name that picks its Redis Cluster slot: the text in its first non-empty `{...}`, else all of it. */
function hashTag(name: string): string {
  const open = name.indexOf("{");
  const close = open < 0 ? -1 : name.indexOf("}", open + 1);
  return close > open + 1 ? name.slice(open + 1, close) : name;
}
