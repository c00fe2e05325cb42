/**
 * Replica announcements in Redis (target.proto ReplicaAnnouncement, keys and timings from proto/verify-queue.ts): a
 * replica keeps its key alive with a heartbeat and deletes it on clean shutdown; gateways list the live ones. A key
 * that expired (REPLICA_TTL_MS without a heartbeat) means the replica is gone: its sequences go to another replica.
 */
import type { Cluster, Redis } from "ioredis";
import type { ReplicaAnnouncement, ReplicaAnnouncement__Output } from "../../gen/specgate/v1/ReplicaAnnouncement.ts";
import {
  decodeReplicaAnnouncement,
  encodeReplicaAnnouncement,
  REPLICA_HEARTBEAT_MS,
  REPLICA_KEY_PATTERN,
  REPLICA_TTL_MS,
  replicaKey,
} from "../../proto/verify-queue.ts";
import type { RedisClient } from "./redis-target.ts";

export interface Announcer {
  /** Stops the heartbeat and deletes the key (gateways stop routing here at once instead of after the TTL). */
  withdraw(): Promise<void>;
}

/** Writes the announcement now and refreshes it every heartbeat; `onError` hears about failed refreshes. */
export async function announceReplica(
  redis: RedisClient,
  announcement: ReplicaAnnouncement,
  onError: (error: Error) => void,
): Promise<Announcer> {
  const key = replicaKey(announcement.replica_id as string);
  const value = encodeReplicaAnnouncement(announcement);
  const refresh = () => redis.set(key, value, "PX", REPLICA_TTL_MS);
  await refresh();
  const timer = setInterval(() => refresh().catch(onError), REPLICA_HEARTBEAT_MS);
  timer.unref();
  return {
    async withdraw() {
      clearInterval(timer);
      await redis.del(key);
    },
  };
}

/**
 * The replicas announced right now, by replica id. On a cluster each replica's key lives on the shard of its tag, so
 * every master is scanned, and read, on its own.
 */
export async function listReplicas(redis: RedisClient): Promise<Map<string, ReplicaAnnouncement__Output>> {
  const replicas = new Map<string, ReplicaAnnouncement__Output>();
  const values = await Promise.all((await nodesOf(redis)).map(announcementsOn));
  for (const value of values.flat()) {
    if (value === null) continue;
    const announcement = decodeReplicaAnnouncement(value);
    replicas.set(announcement.replica_id, announcement);
  }
  return replicas;
}

/** The node, or a cluster's masters. */
async function nodesOf(redis: RedisClient): Promise<Redis[]> {
  if (!redis.isCluster) return [redis as Redis];
  const cluster = redis as Cluster;
  // The cluster client learns its nodes once connected, which any command waits for.
  if (cluster.nodes("master").length === 0) await cluster.ping();
  const masters = cluster.nodes("master");
  // No node known is no answer, not "no replica": every replica would count as lost.
  if (masters.length === 0) throw new Error("no Redis Cluster master is known yet");
  return masters;
}

/** The announcements one node holds (one key per slot: read in one pipeline, not one MGET, which spans slots). */
async function announcementsOn(node: Redis): Promise<(string | null)[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await node.scan(cursor, "MATCH", REPLICA_KEY_PATTERN, "COUNT", 100);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== "0");
  if (keys.length === 0) return [];
  const results = (await node.pipeline(keys.map((key) => ["get", key])).exec()) ?? [];
  return results.map(([error, value]) => {
    // A key unread is not a replica gone: the poll fails and is tried again.
    if (error) throw error;
    return value as string | null;
  });
}

export interface ReplicaWatch {
  stop(): void;
}

/**
 * Polls the announcements every heartbeat and reports replicas that appeared and replicas whose key is gone (dead:
 * missed heartbeats for REPLICA_TTL_MS, or withdrawn on clean shutdown).
 */
export function watchReplicas(
  redis: RedisClient,
  handlers: {
    joined?(announcement: ReplicaAnnouncement__Output): void;
    lost?(replicaId: string): void;
    error?(error: Error): void;
  },
  intervalMs = REPLICA_HEARTBEAT_MS,
): ReplicaWatch {
  let known = new Map<string, ReplicaAnnouncement__Output>();
  let polling = false;
  const poll = async () => {
    if (polling) return;
    polling = true;
    try {
      const live = await listReplicas(redis);
      for (const [id, announcement] of live) if (!known.has(id)) handlers.joined?.(announcement);
      for (const id of known.keys()) if (!live.has(id)) handlers.lost?.(id);
      known = live;
    } catch (error) {
      handlers.error?.(error as Error);
    } finally {
      polling = false;
    }
  };
  void poll();
  const timer = setInterval(poll, intervalMs);
  return { stop: () => clearInterval(timer) };
}
