/**
 * The producer side of verification, for the gateway (and tests and benchmarks): enqueue a VerifyJob on a replica's
 * queue and await its VerifyResult.
 *
 * Per replica it keeps one BullMQ Queue and one QueueEvents. Each job gets its own id and its waiter is registered
 * before the job is added. The job is also published on the replica's push channel, and the replica publishes the
 * outcome on this client's reply channel as soon as the job's batch ends: that reply usually settles the waiter; the
 * events stream (BullMQ's completion) settles it when the reply was lost, so neither shortcut can lose a round (no
 * polling either way). A failed job rejects with a VerifyJobError whose code says what to do
 * (verify-errors.ts). A replica that disappears never completes its jobs: whoever watches the announcements
 * (replica.ts `watchReplicas`) calls `replicaLost`, which rejects them with UNAVAILABLE so the caller can re-send the
 * same VerifyJob to another replica (it carries the full history; the new replica re-prefills).
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import type { VerifyJob } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../../gen/specgate/v1/VerifyResult.ts";
import {
  decodeVerifyReply,
  decodeVerifyResult,
  encodeVerifyPush,
  QUEUE_PREFIX,
  queueConnection,
  VERIFY_JOB_NAME,
  type VerifyJobData,
  verifyJobData,
  verifyPushChannel,
  verifyQueueName,
  verifyReplyChannel,
} from "../../proto/verify-queue.ts";
import { abortable } from "./abortable.ts";
import { type Publication, publisher, TurnBatch } from "./turn-batch.ts";
import { parseVerifyFailure, VerifyJobError } from "./verify-errors.ts";
import { nowUnixMs } from "./verify-job.ts";

interface Waiter {
  readonly replicaId: string;
  resolve(result: VerifyResult__Output): void;
  reject(error: Error): void;
}

interface QueuedCopy {
  readonly data: VerifyJobData;
  readonly jobId: string;
}

interface ReplicaQueue {
  readonly queue: Queue<VerifyJobData, string>;
  /** The turn's adds in at most two writes (many streams' rounds are enqueued from the turn a batch's replies came). */
  readonly adds: TurnBatch<QueuedCopy, unknown>;
  readonly events: QueueEvents;
}

const JOB_OPTIONS = { removeOnComplete: true, removeOnFail: true } as const;

const BULLMQ_CLOSE_WAIT_MS = 2000;

export class VerifyClient {
  readonly #replicas = new Map<string, Promise<ReplicaQueue>>();
  /** Jobs awaited, by job id. */
  readonly #waiting = new Map<string, Waiter>();
  /** For the commands BullMQ does not wrap: pushes, and reading the events stream's end. */
  readonly #redis: Redis;
  readonly #pushes: TurnBatch<Publication, number>;
  /** Subscribed to this client's reply channel (a subscribed connection takes no other commands). */
  readonly #replies: Redis;
  readonly #replyChannel = verifyReplyChannel(randomUUID());
  #subscribed: Promise<unknown> | undefined;

  constructor(readonly redisUrl: string) {
    // ioredis reconnects by itself; whoever owns this client reports Redis outages through its own connection.
    this.#redis = new Redis(redisUrl, { lazyConnect: true }).on("error", () => undefined);
    this.#pushes = publisher(this.#redis);
    this.#replies = new Redis(redisUrl, { lazyConnect: true }).on("error", () => undefined);
    this.#replies.on("messageBuffer", (_channel: Buffer, message: Buffer) => this.#onReply(message));
  }

  /**
   * Enqueues `job` on the replica's queue and resolves with its result. Sets `enqueued_at_unix_ms` when the job does
   * not carry it. Rejects with a VerifyJobError when the replica failed the job or was reported lost (UNAVAILABLE too
   * when Redis refused the job), and with the signal's reason when aborted, also while Redis is down (the job is
   * removed if it still waits).
   */
  async verify(replicaId: string, job: VerifyJob, signal?: AbortSignal): Promise<VerifyResult__Output> {
    signal?.throwIfAborted();
    // Without the subscription (Redis still connecting) replies are missed and completion events settle the jobs.
    this.#subscribed ??= this.#replies.subscribe(this.#replyChannel).catch(() => undefined);
    // While Redis is down these (and the add below) wait for it: the signal bounds the wait. A job that cannot be
    // enqueued fails as UNAVAILABLE (the round may be re-sent), not as an internal error.
    const unavailable = (error: unknown) =>
      signal?.aborted || error instanceof VerifyJobError
        ? error
        : new VerifyJobError("UNAVAILABLE", `cannot enqueue on Redis: ${(error as Error).message}`);
    const [replica] = await abortable(Promise.all([this.#replica(replicaId), this.#subscribed]), signal).catch(
      (error) => {
        throw unavailable(error);
      },
    );
    const jobId = randomUUID();
    const result = new Promise<VerifyResult__Output>((resolve, reject) => {
      this.#waiting.set(jobId, { replicaId, resolve, reject });
    });
    // An abort or a lost replica may reject this before it is awaited (while the job is still being added).
    result.catch(() => undefined);
    const onAbort = () => {
      this.#waiting.get(jobId)?.reject(signal?.reason as Error);
      this.#waiting.delete(jobId);
      void replica.queue.remove(jobId).catch(() => undefined);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    const sent: VerifyJob = {
      ...job,
      enqueued_at_unix_ms: job.enqueued_at_unix_ms || nowUnixMs(),
      job_id: jobId,
      reply_channel: this.#replyChannel,
    };
    const encoded = encodeVerifyPush(sent);
    // The push goes first (it is the fast copy); a failed push only costs its shortcut.
    this.#pushes.send({ channel: verifyPushChannel(replicaId), message: encoded }).catch(() => undefined);
    try {
      await abortable(replica.adds.send({ data: verifyJobData(encoded), jobId }), signal);
    } catch (error) {
      this.#waiting.delete(jobId);
      signal?.removeEventListener("abort", onAbort);
      throw unavailable(error);
    }
    try {
      return await result;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Rejects every job awaited from the replica with UNAVAILABLE (it is gone: re-send them elsewhere). */
  async replicaLost(replicaId: string, reason = "its announcement expired"): Promise<number> {
    let lost = 0;
    for (const [jobId, waiter] of this.#waiting) {
      if (waiter.replicaId !== replicaId) continue;
      this.#waiting.delete(jobId);
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
   * Closes the queues and connections. BullMQ's QueueEvents can fail to close after its connection lived through a
   * Redis outage (seen after half a minute down), so the queues get BULLMQ_CLOSE_WAIT_MS and are then left to the
   * process's exit.
   */
  async close(): Promise<void> {
    const opened = [...this.#replicas.values()];
    this.#replicas.clear();
    const queues = Promise.all(
      opened.map(async (replica) => {
        const { events, queue } = await replica;
        await Promise.all([events.close(), queue.close()]);
      }),
    ).catch(() => undefined);
    await Promise.race([queues, sleep(BULLMQ_CLOSE_WAIT_MS, undefined, { ref: false })]);
    await Promise.all(
      [this.#redis, this.#replies].map((redis) => (redis.status === "wait" ? undefined : redis.quit())),
    );
  }

  /** Settles the waiter of a job (once: a reply and a completion event may both come). */
  #settle(jobId: string, outcome: () => VerifyResult__Output): void {
    const waiter = this.#waiting.get(jobId);
    if (waiter === undefined) return;
    this.#waiting.delete(jobId);
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
      // Unreadable: the job's completion event still settles it.
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

  async #open(replicaId: string): Promise<ReplicaQueue> {
    const connection = queueConnection(this.redisUrl);
    const name = verifyQueueName(replicaId);
    const queue = new Queue<VerifyJobData, string>(name, { connection, prefix: QUEUE_PREFIX });
    // Read events from the stream's current end: nothing earlier concerns this client, nothing later is missed.
    const last = await this.#redis.xrevrange(queue.keys.events, "+", "-", "COUNT", 1);
    const events = new QueueEvents(name, {
      connection,
      prefix: QUEUE_PREFIX,
      lastEventId: last[0]?.[0] ?? "0-0",
    });
    events.on("completed", ({ jobId, returnvalue }) => {
      this.#settle(jobId, () => {
        try {
          return decodeVerifyResult(returnvalue as unknown as string);
        } catch (error) {
          throw new VerifyJobError("UNAVAILABLE", `unreadable result: ${(error as Error).message}`);
        }
      });
    });
    events.on("failed", ({ jobId, failedReason }) => {
      this.#settle(jobId, () => {
        throw parseVerifyFailure(failedReason);
      });
    });
    // Connection errors are retried by BullMQ itself; a caller that cannot wait forever passes an AbortSignal.
    queue.on("error", () => undefined);
    events.on("error", () => undefined);
    await events.waitUntilReady();
    const adds = new TurnBatch<QueuedCopy, unknown>(
      ({ data, jobId }) => queue.add(VERIFY_JOB_NAME, data, { ...JOB_OPTIONS, jobId }),
      (copies) =>
        queue.addBulk(
          copies.map(({ data, jobId }) => ({ name: VERIFY_JOB_NAME, data, opts: { ...JOB_OPTIONS, jobId } })),
        ),
    );
    return { queue, adds, events };
  }
}
