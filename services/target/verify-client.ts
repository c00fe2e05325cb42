/**
 * The producer side of verification, for the gateway (and tests and benchmarks): enqueue a VerifyJob on a replica's
 * queue and await its VerifyResult.
 *
 * Per replica it keeps one BullMQ Queue and one QueueEvents. Each job gets its own id and its listener is registered
 * before the job is added, so a result is picked up from the events stream the moment the replica completes the job
 * (no polling, no extra round trip). A failed job rejects with a VerifyJobError whose code says what to do
 * (verify-errors.ts). A replica that disappears never completes its jobs: whoever watches the announcements
 * (replica.ts `watchReplicas`) calls `replicaLost`, which rejects them with UNAVAILABLE so the caller can re-send the
 * same VerifyJob to another replica (it carries the full history; the new replica re-prefills).
 */
import { randomUUID } from "node:crypto";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import type { VerifyJob } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../../gen/specgate/v1/VerifyResult.ts";
import {
  decodeVerifyResult,
  encodeVerifyJob,
  QUEUE_PREFIX,
  VERIFY_JOB_NAME,
  type VerifyJobData,
  verifyQueueName,
} from "../../proto/verify-queue.ts";
import { parseVerifyFailure, VerifyJobError } from "./verify-errors.ts";
import { nowUnixMs } from "./verify-job.ts";

interface Waiter {
  resolve(result: VerifyResult__Output): void;
  reject(error: Error): void;
}

interface ReplicaQueue {
  readonly queue: Queue<VerifyJobData, string>;
  readonly events: QueueEvents;
  readonly waiting: Map<string, Waiter>;
}

export class VerifyClient {
  readonly #replicas = new Map<string, Promise<ReplicaQueue>>();
  /** For the one command BullMQ does not wrap (reading the events stream's end). */
  readonly #redis: Redis;

  constructor(readonly redisUrl: string) {
    this.#redis = new Redis(redisUrl, { lazyConnect: true });
  }

  /**
   * Enqueues `job` on the replica's queue and resolves with its result. Sets `enqueued_at_unix_ms` when the job does
   * not carry it. Rejects with a VerifyJobError when the replica failed the job or was reported lost, and with the
   * signal's reason when aborted (the job is removed if it still waits).
   */
  async verify(replicaId: string, job: VerifyJob, signal?: AbortSignal): Promise<VerifyResult__Output> {
    signal?.throwIfAborted();
    const replica = await this.#replica(replicaId);
    const jobId = randomUUID();
    const result = new Promise<VerifyResult__Output>((resolve, reject) => {
      replica.waiting.set(jobId, { resolve, reject });
    });
    // An abort or a lost replica may reject this before it is awaited (while the job is still being added).
    result.catch(() => undefined);
    const onAbort = () => {
      replica.waiting.get(jobId)?.reject(signal?.reason as Error);
      replica.waiting.delete(jobId);
      void replica.queue.remove(jobId).catch(() => undefined);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await replica.queue.add(
        VERIFY_JOB_NAME,
        encodeVerifyJob({ ...job, enqueued_at_unix_ms: job.enqueued_at_unix_ms || nowUnixMs() }),
        { jobId, removeOnComplete: true, removeOnFail: true },
      );
    } catch (error) {
      replica.waiting.delete(jobId);
      signal?.removeEventListener("abort", onAbort);
      throw error;
    }
    try {
      return await result;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Rejects every job awaited from the replica with UNAVAILABLE (it is gone: re-send them elsewhere). */
  async replicaLost(replicaId: string, reason = "its announcement expired"): Promise<number> {
    const replica = this.#replicas.get(replicaId);
    if (replica === undefined) return 0;
    const { waiting } = await replica;
    const lost = waiting.size;
    for (const waiter of waiting.values()) {
      waiter.reject(new VerifyJobError("UNAVAILABLE", `replica ${replicaId} is gone (${reason})`));
    }
    waiting.clear();
    return lost;
  }

  /** Jobs awaited from the replica right now. */
  async awaiting(replicaId: string): Promise<number> {
    const replica = this.#replicas.get(replicaId);
    return replica ? (await replica).waiting.size : 0;
  }

  async close(): Promise<void> {
    const replicas = await Promise.all(this.#replicas.values());
    this.#replicas.clear();
    await Promise.all(replicas.flatMap((r) => [r.events.close(), r.queue.close()]));
    if (this.#redis.status !== "wait") await this.#redis.quit();
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
    const connection = { url: this.redisUrl };
    const name = verifyQueueName(replicaId);
    const queue = new Queue<VerifyJobData, string>(name, { connection, prefix: QUEUE_PREFIX });
    // Read events from the stream's current end: nothing earlier concerns this client, nothing later is missed.
    const last = await this.#redis.xrevrange(queue.keys.events, "+", "-", "COUNT", 1);
    const events = new QueueEvents(name, {
      connection,
      prefix: QUEUE_PREFIX,
      lastEventId: last[0]?.[0] ?? "0-0",
    });
    const waiting = new Map<string, Waiter>();
    events.on("completed", ({ jobId, returnvalue }) => {
      const waiter = waiting.get(jobId);
      if (waiter === undefined) return;
      waiting.delete(jobId);
      try {
        waiter.resolve(decodeVerifyResult(returnvalue as unknown as string));
      } catch (error) {
        waiter.reject(new VerifyJobError("UNAVAILABLE", `unreadable result: ${(error as Error).message}`));
      }
    });
    events.on("failed", ({ jobId, failedReason }) => {
      const waiter = waiting.get(jobId);
      if (waiter === undefined) return;
      waiting.delete(jobId);
      waiter.reject(parseVerifyFailure(failedReason));
    });
    // Connection errors are retried by BullMQ itself; a caller that cannot wait forever passes an AbortSignal.
    events.on("error", () => undefined);
    await events.waitUntilReady();
    return { queue, events, waiting };
  }
}
