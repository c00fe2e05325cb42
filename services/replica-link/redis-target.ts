/**
 * Which Redis specgate uses and how it opens it: one node (REDIS_URL), or a Redis Cluster reached through one of its
 * nodes (REDIS_URL with REDIS_CLUSTER=true; ioredis learns the other nodes and the slot map from it). The URL's user,
 * password and TLS (`rediss://user:pass@host:port`) apply to every node of a cluster.
 */
import type { ConnectionOptions } from "bullmq";
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from "ioredis";

export interface RedisTarget {
  readonly url: string;
  /** `url` names one node of a Redis Cluster. */
  readonly cluster?: boolean;
}

export type RedisClient = Redis | Cluster;

/**
 * Reconnection at most every 2 s: BullMQ's own backoff grows to 20 s, which after a Redis outage of half a minute
 * would leave the queues (and closing them) waiting that long after Redis is back.
 */
const retryStrategy = (attempt: number) => Math.min(attempt * 100, 2000);

/** A client of the target: options apply to the node's connection, or on a cluster to each node's. */
export function openRedis(target: RedisTarget, options: RedisOptions = {}): RedisClient {
  if (!target.cluster) return new Redis(target.url, options);
  const { lazyConnect, ...nodeOptions } = options;
  return openCluster(target.url, { lazyConnect }, nodeOptions);
}

/**
 * BullMQ's `connection` for the queues and workers of one owner. On one node, options: each Queue or Worker opens and
 * closes its own connections. On a cluster, a Cluster client that the owner closes (closeQueueConnection) after its
 * queues and workers: BullMQ uses a client it is handed as it is, or duplicates it for a Worker, and leaves it open.
 */
export function queueConnection(target: RedisTarget): ConnectionOptions {
  if (!target.cluster) return { url: target.url, retryStrategy };
  // BullMQ's workers block on their connections: commands there must wait for a reconnection, never give up.
  return openCluster(target.url, { lazyConnect: true }, { maxRetriesPerRequest: null });
}

export async function closeQueueConnection(connection: ConnectionOptions): Promise<void> {
  if (connection instanceof Cluster && connection.status !== "end") await connection.quit().catch(() => undefined);
}

function openCluster(url: string, options: ClusterOptions, nodeOptions: RedisOptions): Cluster {
  const parsed = new URL(url);
  const node = { host: parsed.hostname.replace(/^\[|\]$/g, ""), port: Number(parsed.port || 6379) };
  return new Cluster([node], {
    ...options,
    // SSUBSCRIBE goes to the node owning the channel's slot (channels.ts), one subscriber connection per shard.
    shardedSubscribers: true,
    clusterRetryStrategy: retryStrategy,
    redisOptions: {
      ...nodeOptions,
      username: decodeURIComponent(parsed.username) || undefined,
      password: decodeURIComponent(parsed.password) || undefined,
      ...(parsed.protocol === "rediss:" && { tls: {} }),
    },
  });
}
