/**
 * The producer side of verification, for the gateway (and tests and benchmarks): send a VerifyJob to a replica
 * through Redis and await its VerifyResult.
 *
 * Per replica it keeps one BullMQ Queue and one reply channel of its own (named with the replica's hash tag, so that
 * on a Redis Cluster the replies stay on that replica's shard). Each job gets its own id and its waiter is registered
 * before the job is sent. The job is published on the replica's push channel, and the replica publishes the outcome
 * on this client's reply channel as soon as the job's batch ends; that reply settles the waiter. The job goes on the queue only when the push
 * may be lost: at once when no replica was subscribed to hear it, and as a standby when no reply came within
 * `standbyMs` (a push lost with its connection, or a lost reply: the replica answers a copy of a job it already
 * verified by publishing the outcome again). So in the usual round neither Redis nor the replica does any queue work,
 * and the job lives in this client's memory until then, as the request it belongs to does. A queued copy no longer
 * wanted is removed. When this client's reply subscription comes back after a disconnection, every job still awaited
 * is pushed again. Lost messages cost latency, never a round. A failed job rejects with a VerifyJobError whose code
 * says what to do (verify-errors.ts). A replica that disappears never answers: whoever watches the announcements
 * (announcements.ts `watchReplicas`) calls `replicaLost`, which rejects its jobs with UNAVAILABLE so the caller can
 * re-send the same VerifyJob to another replica (it carries the full history; the new replica re-prefills).
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { type ConnectionOptions, Queue } from "bullmq";
import type { VerifyJob } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../../gen/specgate/v1/VerifyResult.ts";
import {
  decodeVerifyReply,
  encodeVerifyPush,
  QUEUE_PREFIX,
  VERIFY_JOB_NAME,
  type VerifyJobData,
  verifyJobData,
  verifyPushChannel,
  verifyQueueName,
  verifyReplyChannel,
} from "../../proto/verify-queue.ts";
import { abortable } from "./abortable.ts";
import { onMessage, type Publication, subscribe } from "./channels.ts";
import { nowUnixMs } from "./clock.ts";
import {
  closeQueueConnection,
  openRedis,
  queueConnection,
  type RedisClient,
  type RedisTarget,
} from "./redis-target.ts";
import { publisher, TurnBatch } from "./turn-batch.ts";
import { parseVerifyFailure, VerifyJobError } from "./verify-errors.ts";

interface Waiter {
  readonly replicaId: string;
  readonly replica: ReplicaQueue;
  /** The job's pushed copy, pushed again if the reply subscription was interrupted meanwhile; also its queued data. */
  readonly push: Buffer;
  /** Queues the job when no reply came in time. */
  readonly standby: NodeJS.Timeout;
  /** Its copy was added to the queue. */
  queued: boolean;
  resolve(result: VerifyResult__Output): void;
  reject(error: Error): void;
}

interface QueuedCopy {
  readonly data: VerifyJobData;
  readonly jobId: string;
}

interface ReplicaQueue {
  readonly queue: Queue<VerifyJobData, string>;
  readonly connection: ConnectionOptions;
  /** Where the replica answers this client's jobs, subscribed to before any job is sent there. */
  readonly replyChannel: string;
  /** The turn's adds in at most two writes (many streams' rounds are enqueued from the turn a batch's replies came). */
  readonly adds: TurnBatch<QueuedCopy, unknown>;
}

export interface VerifyClientOptions {
  /**
   * How long a pushed job waits for its reply before it also goes on the replica's queue (its standby copy), in ms.
   * Longer than a round normally waits; shorter than the caller's own timeout.
   */
  readonly standbyMs?: number;
}

export const DEFAULT_STANDBY_MS = 1000;

/** Redis client name of the connection subscribed to the replies (CLIENT LIST shows it). */
export const REPLIES_CONNECTION_NAME = "specgate-verify-replies";

/** Queued copies no longer wanted leave with the next job sent to their replica, or after this long. */
const REMOVAL_DELAY_MS = 50;

const BULLMQ_CLOSE_WAIT_MS = 2000;

export class VerifyClient {
  readonly #replicas = new Map<string, Promise<ReplicaQueue>>();
  /** Jobs awaited, by job id. */
  readonly #waiting = new Map<string, Waiter>();
  /** For the commands BullMQ does not wrap: pushes. */
  readonly #redis: RedisClient;
  readonly #pushes: TurnBatch<Publication, number>;
  /** Subscribed to this client's reply channels, one per replica (a subscribed connection takes no other commands). */
  readonly #replies: RedisClient;
  readonly #clientId = randomUUID();
  #repliesConnected = false;
  readonly #standbyMs: number;
  /** Queued copies no longer wanted (answered, aborted, or their replica lost), by replica id, to remove. */
  readonly #spent = new Map<string, string[]>();
  #removalTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly redis: RedisTarget,
    options: VerifyClientOptions = {},
  ) {
    const standbyMs = options.standbyMs ?? DEFAULT_STANDBY_MS;
    if (!(Number.isInteger(standbyMs) && standbyMs >= 1)) {
      throw new RangeError(`standbyMs must be a positive integer, got ${standbyMs}`);
    }
    this.#standbyMs = standbyMs;
    // ioredis reconnects by itself; whoever owns this client reports Redis outages through its own connection.
    this.#redis = openRedis(redis, { lazyConnect: true }).on("error", () => undefined);
    this.#pushes = publisher(this.#redis);
    this.#replies = openRedis(redis, { lazyConnect: true, connectionName: REPLIES_CONNECTION_NAME }).on(
      "error",
      () => undefined,
    );
    onMessage(this.#replies, (_channel, message) => this.#onReply(message));
    // ioredis has re-sent the subscription by the time "ready" is emitted again.
    this.#replies.on("ready", () => {
      if (this.#repliesConnected) this.#pushAgain();
      this.#repliesConnected = true;
    });
  }

  /**
   * Sends `job` to the replica (its push, and its queue when the push may be lost) and resolves with its result. Sets
   * `enqueued_at_unix_ms` when the job does not carry it. Rejects with a VerifyJobError when the replica failed the job or was reported lost (UNAVAILABLE too
   * when Redis refused the job), and with the signal's reason when aborted, also while Redis is down (the job is
   * removed if it still waits).
   */
  async verify(replicaId: string, job: VerifyJob, signal?: AbortSignal): Promise<VerifyResult__Output> {
    signal?.throwIfAborted();
    // While Redis is down opening the replica's queue and reply subscription (and the push below) wait for it: the
    // signal bounds the wait. A job that cannot be enqueued fails as UNAVAILABLE (the round may be re-sent), not as an
    // internal error.
    const unavailable = (error: unknown): Error =>
      signal?.aborted || error instanceof VerifyJobError
        ? (error as Error)
        : new VerifyJobError("UNAVAILABLE", `cannot enqueue on Redis: ${(error as Error).message}`);
    const replica = await abortable(this.#replica(replicaId), signal).catch((error) => {
      throw unavailable(error);
    });
    const jobId = randomUUID();
    const sent: VerifyJob = {
      ...job,
      enqueued_at_unix_ms: job.enqueued_at_unix_ms || nowUnixMs(),
      job_id: jobId,
      reply_channel: replica.replyChannel,
    };
    const push = encodeVerifyPush(sent);
    const result = new Promise<VerifyResult__Output>((resolve, reject) => {
      const standby = setTimeout(() => {
        this.#queue(jobId)?.catch((error) => this.#retire(jobId)?.reject(unavailable(error)));
      }, this.#standbyMs).unref();
      this.#waiting.set(jobId, { replicaId, replica, push, resolve, reject, standby, queued: false });
    });
    // An abort or a lost replica may reject this before it is awaited (while the push is on its way).
    result.catch(() => undefined);
    const onAbort = () => this.#retire(jobId)?.reject(signal?.reason as Error);
    signal?.addEventListener("abort", onAbort, { once: true });
    const pushed = this.#pushes.send({ channel: verifyPushChannel(replicaId), message: push });
    // Redis takes the removals of spent queued copies with this job, in the same wake-up.
    void this.#removeSpent(replicaId);
    try {
      // No replica heard the push (none subscribed: reconnecting, or not up yet): the queue is its only way there.
      if ((await abortable(pushed, signal)) === 0) await abortable(this.#queue(jobId) ?? Promise.resolve(), signal);
    } catch (error) {
      this.#retire(jobId);
      signal?.removeEventListener("abort", onAbort);
      throw unavailable(error);
    }
    try {
      return await result;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Rejects every job awaited from the replica with UNAVAILABLE (it is gone: re-send them elsewhere), and removes
   * their queued copies, which a replica coming back under the same id would otherwise verify for nobody.
   */
  async replicaLost(replicaId: string, reason = "its announcement expired"): Promise<number> {
    let lost = 0;
    for (const [jobId, waiter] of this.#waiting) {
      if (waiter.replicaId !== replicaId) continue;
      this.#retire(jobId);
      waiter.reject(new VerifyJobError("UNAVAILABLE", `replica ${replicaId} is gone (${reason})`));
      lost++;
    }
    return lost;
  }

  /** Jobs awaited from the replica right now. */
  async awaiting(replicaId: string): Promise<number> {
    let count = 0;
    for (const waiter of this.#waiting.values()) if (waiter.replicaId === replicaId) count++;
    return count;
  }

  /**
   * Removes the spent queued copies and closes the queues and connections. A BullMQ close can wait for Redis forever
   * during an outage, so the queues get BULLMQ_CLOSE_WAIT_MS and are then left to the process's exit.
   */
  async close(): Promise<void> {
    const removals = this.#removeSpent();
    const opened = [...this.#replicas.values()];
    this.#replicas.clear();
    const queues = removals
      .then(() =>
        Promise.all(
          opened.map(async (replica) => {
            const { queue, connection } = await replica;
            await queue.close();
            await closeQueueConnection(connection);
          }),
        ),
      )
      .catch(() => undefined);
    await Promise.race([queues, sleep(BULLMQ_CLOSE_WAIT_MS, undefined, { ref: false })]);
    await Promise.all(
      [this.#redis, this.#replies].map((redis) => (redis.status === "wait" ? undefined : redis.quit())),
    );
  }

  /** Settles the waiter of a job (once: a replica may answer a job twice). */
  #settle(jobId: string, outcome: () => VerifyResult__Output): void {
    const waiter = this.#retire(jobId);
    if (waiter === undefined) return;
    try {
      waiter.resolve(outcome());
    } catch (error) {
      waiter.reject(error instanceof VerifyJobError ? error : new VerifyJobError("UNAVAILABLE", String(error)));
    }
  }

  #onReply(message: Buffer): void {
    let reply: ReturnType<typeof decodeVerifyReply>;
    try {
      reply = decodeVerifyReply(message);
    } catch {
      // Unreadable: the replica answers again when the job's standby copy is queued.
      return;
    }
    this.#settle(reply.job_id, () => {
      if (reply.failure !== "") throw parseVerifyFailure(reply.failure);
      if (reply.result === null) throw new VerifyJobError("UNAVAILABLE", "a verify reply without a result");
      return reply.result;
    });
  }

  #replica(replicaId: string): Promise<ReplicaQueue> {
    let replica = this.#replicas.get(replicaId);
    if (replica === undefined) {
      replica = this.#open(replicaId);
      this.#replicas.set(replicaId, replica);
      replica.catch(() => this.#replicas.delete(replicaId));
    }
    return replica;
  }

  /** Pushes every awaited job again: their replies may have been published while the subscription was down. */
  #pushAgain(): void {
    for (const { replicaId, push } of this.#waiting.values()) {
      this.#pushes.send({ channel: verifyPushChannel(replicaId), message: push }).catch(() => undefined);
    }
  }

  /**
   * Adds the awaited job's copy to its replica's queue, once: undefined when it is no longer awaited or already queued.
   */
  #queue(jobId: string): Promise<unknown> | undefined {
    const waiter = this.#waiting.get(jobId);
    if (waiter === undefined || waiter.queued) return undefined;
    waiter.queued = true;
    clearTimeout(waiter.standby);
    return waiter.replica.adds.send({ data: verifyJobData(waiter.push), jobId });
  }

  /** The job is no longer awaited: its waiter (undefined when it was not), with its queued copy marked for removal. */
  #retire(jobId: string): Waiter | undefined {
    const waiter = this.#waiting.get(jobId);
    if (waiter === undefined) return undefined;
    this.#waiting.delete(jobId);
    clearTimeout(waiter.standby);
    if (waiter.queued) this.#spend(waiter.replicaId, jobId);
    return waiter;
  }

  #spend(replicaId: string, jobId: string): void {
    const spent = this.#spent.get(replicaId);
    if (spent === undefined) this.#spent.set(replicaId, [jobId]);
    else spent.push(jobId);
    this.#removalTimer ??= setTimeout(() => void this.#removeSpent(), REMOVAL_DELAY_MS).unref();
  }

  /** Removes the spent queued copies (of one replica, or all); a copy a replica has taken meanwhile stays. */
  async #removeSpent(replicaId?: string): Promise<void> {
    const ids = replicaId === undefined ? [...this.#spent.keys()] : [replicaId];
    const removals: Promise<unknown>[] = [];
    for (const id of ids) {
      const jobIds = this.#spent.get(id);
      const replica = this.#replicas.get(id);
      this.#spent.delete(id);
      if (jobIds === undefined || replica === undefined) continue;
      removals.push(replica.then(({ queue }) => Promise.all(jobIds.map((jobId) => queue.remove(jobId)))));
    }
    if (this.#spent.size === 0) {
      clearTimeout(this.#removalTimer);
      this.#removalTimer = undefined;
    }
    await Promise.all(removals.map((removal) => removal.catch(() => undefined)));
  }

  async #open(replicaId: string): Promise<ReplicaQueue> {
    const name = verifyQueueName(replicaId);
    const connection = queueConnection(this.redis);
    const queue = new Queue<VerifyJobData, string>(name, { connection, prefix: QUEUE_PREFIX });
    // Connection errors are retried by BullMQ itself; a caller that cannot wait forever passes an AbortSignal.
    queue.on("error", () => undefined);
    const replyChannel = verifyReplyChannel(replicaId, this.#clientId);
    // Without the subscription replies would be missed: jobs are sent there once it is in place.
    try {
      await Promise.all([queue.waitUntilReady(), subscribe(this.#replies, replyChannel)]);
    } catch (error) {
      // The next job to the replica opens it again.
      void queue
        .close()
        .catch(() => undefined)
        .then(() => closeQueueConnection(connection));
      throw error;
    }
    const options = { removeOnComplete: true, removeOnFail: true };
    const adds = new TurnBatch<QueuedCopy, unknown>(
      ({ data, jobId }) => queue.add(VERIFY_JOB_NAME, data, { ...options, jobId }),
      (copies) =>
        queue.addBulk(copies.map(({ data, jobId }) => ({ name: VERIFY_JOB_NAME, data, opts: { ...options, jobId } }))),
    );
    return { queue, connection, replyChannel, adds };
  }
}
