/**
 * The batch items' BullMQ queue `batch-items` (prefix `specgate`) and the worker every gateway runs on it. One job per
 * item, id `<batchId>-<index>`, so queuing a batch again adds nothing twice. The worker runs an item through the
 * gateway's own request path (requests.ts: validation, admission, the round loop), hence the same lossless output as
 * Generate, admitted only into room interactive requests leave free (admission.ts). A failure worth retrying
 * (UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL) is retried with exponential backoff; the last attempt's failure becomes
 * the item's error result. BullMQ runs an item at least once (a killed gateway's items go back to the queue once its
 * lock expires); the store writes one result per item (batch-store.ts), and a worker skips an item that has one.
 */
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { ROOT_CONTEXT } from "@opentelemetry/api";
import { type ConnectionOptions, type Job, Queue, Worker } from "bullmq";
import type { Logger } from "pino";
import type { Batch } from "../gen/specgate/v1/Batch.ts";
import { SERVICE_NAMES } from "../proto/load.ts";
import { QUEUE_PREFIX } from "../proto/verify-queue.ts";
import { closeQueueConnection, queueConnection, type RedisTarget } from "../services/replica-link/redis-target.ts";
import { AdmissionRefused } from "./admission.ts";
import type { BatchStore, ItemOutcome } from "./batch-store.ts";
import { type GatewayRequests, generateResponse, requestStatus } from "./requests.ts";

/** Hash-tagged: on a Redis Cluster, BullMQ needs all of a queue's keys in one slot. */
const BATCH_QUEUE = "{batch-items}";
const ITEM_JOB_NAME = "item";
/** Failures another attempt may not meet: the replicas or the draft service coming back, room freeing up. */
const RETRIED = new Set([grpc.status.UNAVAILABLE, grpc.status.RESOURCE_EXHAUSTED, grpc.status.INTERNAL]);
/** Longest wait for BullMQ to close (see `close`). */
const CLOSE_WAIT_MS = 2000;
/** Longest wait between two asks for spare room. */
const MAX_ROOM_WAIT_MS = 1000;

interface ItemJobData {
  readonly batchId: string;
  readonly index: number;
}

export interface BatchQueueOptions {
  readonly redis: RedisTarget;
  readonly store: BatchStore;
  readonly requests: GatewayRequests;
  /** Served model name, as responses report it. */
  readonly model: string;
  /** Items this gateway runs at once (0: it runs none, only queues). */
  readonly concurrency: number;
  /** A killed gateway's running items go back to the queue this long after it last renewed their locks. */
  readonly lockMs: number;
  /** Attempts per item, and the first retry's delay (doubling after it). */
  readonly attempts: number;
  readonly backoffMs: number;
  readonly logger: Logger;
}

/**
 * BullMQ's worker, able to stop renewing its locks when its close is stuck on a Redis that went away: the renewal timer
 * would otherwise keep the process alive forever (the close stops it only after the loop waiting on Redis has ended).
 */
class ItemWorker extends Worker<ItemJobData> {
  stopRenewingLocks(): Promise<void> {
    return this.lockManager.close();
  }
}

/** A failure another attempt may cure, carrying the status the item ends with if none does. */
class RetriedFailure extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

export class BatchQueue {
  readonly #queue: Queue<ItemJobData>;
  readonly #worker: ItemWorker | undefined;
  readonly #stopping = new AbortController();
  #closing: Promise<void> | undefined;

  readonly #connection: ConnectionOptions;

  constructor(private readonly options: BatchQueueOptions) {
    const connection = queueConnection(options.redis);
    this.#connection = connection;
    this.#queue = new Queue<ItemJobData>(BATCH_QUEUE, { connection, prefix: QUEUE_PREFIX });
    // Connection errors are retried by BullMQ; a call that needs Redis fails on its own.
    this.#queue.on("error", () => undefined);
    if (options.concurrency === 0) return;
    this.#worker = new ItemWorker(BATCH_QUEUE, (job) => this.#process(job), {
      connection,
      prefix: QUEUE_PREFIX,
      concurrency: options.concurrency,
      lockDuration: options.lockMs,
      stalledInterval: options.lockMs,
      maxStalledCount: options.attempts,
      // Short waits, so that a close after a Redis outage is not held by a 15 s retry delay or a 5 s blocking pop.
      runRetryDelay: 1000,
      drainDelay: 1,
    });
    this.#worker.on("error", (error) => options.logger.warn({ err: error }, "batch worker error"));
    this.#worker.on("failed", (job, error) => {
      // A job failed for good (attempts spent, or stalled too often): its item ends with that error.
      if (job?.finishedOn === undefined) return;
      const code = error instanceof RetriedFailure ? error.code : grpc.status.UNAVAILABLE;
      void this.#write(job.data, { code, details: error.message }).catch(() => undefined);
    });
  }

  /** Queues every item of a stored batch (again: items already queued or done are not run twice). */
  async add(batch: Batch): Promise<void> {
    const { options } = this;
    const opts = {
      attempts: options.attempts,
      backoff: { type: "exponential", delay: options.backoffMs },
      removeOnComplete: true,
      removeOnFail: true,
    };
    const total = batch.counts?.total ?? 0;
    await this.#queue.addBulk(
      Array.from({ length: total }, (_, index) => ({
        name: ITEM_JOB_NAME,
        data: { batchId: batch.id as string, index },
        opts: { ...opts, jobId: `${batch.id}-${index}` },
      })),
    );
  }

  /**
   * Stops taking items (at the first call) and closes the worker and the queue, which waits for the running items;
   * those drain with the gateway's requests. A BullMQ close can wait for Redis forever during an outage, so each call
   * waits at most CLOSE_WAIT_MS, then drops the connections: an item whose result was not written yet runs again on
   * another gateway.
   */
  async close(): Promise<void> {
    this.#stopping.abort();
    this.#closing ??= Promise.all([this.#worker?.close(), this.#queue.close()])
      .then(() => closeQueueConnection(this.#connection))
      .then(
        () => undefined,
        () => undefined,
      );
    const closed = await Promise.race([this.#closing.then(() => true), sleep(CLOSE_WAIT_MS, false, { ref: false })]);
    // Left to reconnect and renew, the connections and locks would keep the process alive; their end is not waited for.
    if (!closed) {
      void Promise.allSettled([
        this.#worker?.stopRenewingLocks(),
        this.#worker?.disconnect(),
        this.#queue.disconnect(),
      ]);
    }
  }

  async #process(job: Job<ItemJobData>): Promise<void> {
    const { store, logger } = this.options;
    const { batchId, index } = job.data;
    const batch = await store.get(batchId);
    // Gone (expired), cancelled, or already done by an earlier run of this job: nothing to do.
    if (batch === undefined || batch.status === "BATCH_STATUS_CANCELLED") return;
    if (await store.hasResult(batchId, index)) return;
    const item = await store.item(batchId, index);
    if (item?.request == null) return;
    if (Date.now() > Number(batch.deadline_ms)) {
      await this.#write(job.data, {
        code: grpc.status.DEADLINE_EXCEEDED,
        details: "the batch's completion window closed before this item ran",
        outcome: "expired",
      });
      return;
    }
    logger.info({ batchId, index, attempt: job.attemptsMade + 1 }, "batch item started");
    try {
      const started = await this.#admitted(item.request, String(batch.tenant_id));
      const served = await started.run(() => undefined);
      await this.#write(job.data, { response: generateResponse(served, this.options.model) });
    } catch (error) {
      const status = requestStatus(error);
      if (RETRIED.has(status.code) && job.attemptsMade + 1 < this.options.attempts) {
        throw new RetriedFailure(status.code, status.details);
      }
      await this.#write(job.data, { code: status.code, details: status.details });
    }
  }

  /** The item's request started once the gateway has spare room, asking again while it has none. */
  async #admitted(request: Parameters<GatewayRequests["start"]>[0]["request"], tenant: string) {
    for (;;) {
      try {
        return await this.options.requests.start({
          transport: { protocol: "grpc", method: `${SERVICE_NAMES.gateway}/SubmitBatch` },
          request,
          authorization: [],
          parent: ROOT_CONTEXT,
          watch: () => ({ deadlineMs: 0, release: () => undefined }),
          batch: { tenant },
        });
      } catch (error) {
        if (!(error instanceof AdmissionRefused) || error.reason === "draining" || this.#stopping.signal.aborted) {
          throw error;
        }
        await sleep(Math.min(error.retryAfterMs ?? 50, MAX_ROOM_WAIT_MS));
      }
    }
  }

  /** Writes the item's result once; logs whether this run wrote it, which is what exactly-once is checked by. */
  async #write(
    { batchId, index }: ItemJobData,
    outcome:
      | { readonly response: ReturnType<typeof generateResponse> }
      | { readonly code: grpc.status; readonly details: string; readonly outcome?: ItemOutcome },
  ): Promise<void> {
    const { store, logger } = this.options;
    const item = await store.item(batchId, index);
    const customId = item?.custom_id ?? "";
    const written =
      "response" in outcome
        ? await store.writeResult(batchId, { index, custom_id: customId, response: outcome.response }, "completed")
        : await store.writeResult(
            batchId,
            { index, custom_id: customId, error: { code: grpc.status[outcome.code], message: outcome.details } },
            outcome.outcome ?? "failed",
          );
    logger.info({ batchId, index, written, ok: "response" in outcome }, "batch item result");
  }
}
