/**
 * Where a replica takes verify jobs in. The gateway publishes each job on the replica's push channel, which reaches
 * the replica in one Redis hop, and adds it to the replica's BullMQ queue (taken by verify-worker.ts) only when the
 * push may be lost: nobody heard it, or no reply came in time. Whichever copy arrives first goes to the micro-batcher,
 * the other joins it by job id, so a job is verified once. The moment its batch ends the outcome is
 * published on the job's reply channel: replica → Redis → gateway; and, when the job names the draft service's verdict
 * channel, the round's DraftVerdict there (replica → Redis → draft), so the next draft starts without waiting for the
 * gateway. A copy that arrives after the outcome was published publishes it again: the gateway pushed the job again or
 * queued it because no reply reached it.
 *
 * Outcomes are remembered for `memoryMs` (and at least as long as that again): long enough for the slower copy of a
 * job to find its twin's outcome, bounded for jobs whose queued copy never comes (most jobs).
 */
import type { VerifyJob__Output } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult } from "../../gen/specgate/v1/VerifyResult.ts";
import {
  decodeVerifyPush,
  encodeDraftVerdict,
  encodeVerifyReply,
  verifyPushChannel,
} from "../../proto/verify-queue.ts";
import { onMessage, subscribe } from "./channels.ts";
import type { RedisClient } from "./redis-target.ts";
import { asVerifyJobError } from "./verify-errors.ts";

export interface VerifyIntakeOptions {
  /** The replica's verification of a job (its own checks, then its batch); what it throws fails the job. */
  readonly verify: (job: VerifyJob__Output) => Promise<VerifyResult>;
  /** Publishes a reply (the replica's Redis connection); its failures are reported to `onPublishError`. */
  readonly publish: (channel: string, message: Buffer) => Promise<unknown>;
  readonly onPublishError: (error: unknown) => void;
  /** A pushed message that is not a VerifyJob with a job id (its queued copy, if any, still fails or passes alone). */
  readonly onBadPush: (error: Error) => void;
  readonly memoryMs?: number;
}

const DEFAULT_MEMORY_MS = 30_000;

/** Redis client name of a replica's connection subscribed to its push channel (CLIENT LIST shows it). */
export const PUSHES_CONNECTION_NAME = "specgate-verify-push";

export interface IntakeCounters {
  /** Jobs first taken from their queued copy. */
  readonly jobsFromQueue: number;
  /** Outcomes published again for a copy of a job already answered. */
  readonly repliesRepeated: number;
}

/** Which copy of a job handed it in. */
export type JobCopy = "queue" | "push";

interface Taken {
  readonly outcome: Promise<VerifyResult>;
  /** Whether the queued copy has been handed in (BullMQ completes the job with it). */
  queued: boolean;
  /** The reply and its channel, once published (never, when the job named no reply channel). */
  reply?: { readonly channel: string; readonly message: Buffer };
}

export class VerifyIntake {
  /** Jobs taken, by job id, in two generations: lookups see both, each rotation drops the older. */
  #current = new Map<string, Taken>();
  #previous = new Map<string, Taken>();
  readonly #rotation: NodeJS.Timeout;
  #jobsFromQueue = 0;
  #repliesRepeated = 0;

  constructor(readonly options: VerifyIntakeOptions) {
    this.#rotation = setInterval(() => {
      this.#previous = this.#current;
      this.#current = new Map();
    }, options.memoryMs ?? DEFAULT_MEMORY_MS);
    this.#rotation.unref();
  }

  /**
   * The outcome of the job with this id: the one already under way when the other copy of the job arrived first,
   * otherwise the job goes to `verify`. Rejects with a VerifyJobError.
   */
  take(jobId: string, job: VerifyJob__Output, copy: JobCopy): Promise<VerifyResult> {
    const known = this.taken(jobId, copy);
    if (known !== undefined) return known;
    const outcome = this.#verify(job);
    const taken: Taken = { outcome, queued: copy === "queue" };
    if (taken.queued) this.#jobsFromQueue++;
    this.#current.set(jobId, taken);
    void outcome.then(
      (result) => this.#reply(taken, job, { job_id: jobId, result }),
      (error: unknown) => this.#reply(taken, job, { job_id: jobId, failure: asVerifyJobError(error).message }),
    );
    return outcome;
  }

  /**
   * The outcome of a job already taken (this copy now counts as handed in), or undefined. When that outcome has been
   * published already, it is published again.
   */
  taken(jobId: string, copy: JobCopy): Promise<VerifyResult> | undefined {
    const known = this.#current.get(jobId) ?? this.#previous.get(jobId);
    if (known === undefined) return undefined;
    if (copy === "queue") known.queued = true;
    if (known.reply !== undefined) {
      this.#repliesRepeated++;
      this.#publish(known.reply.channel, known.reply.message);
    }
    return known.outcome;
  }

  /**
   * Takes the jobs pushed on the replica's channel through `subscriber`, a connection of its own (subscribing turns a
   * Redis connection into a listener). Resolves once subscribed; closing the connection ends it.
   */
  async listen(subscriber: RedisClient, replicaId: string): Promise<void> {
    onMessage(subscriber, (_channel, message) => {
      let job: VerifyJob__Output;
      try {
        job = decodeVerifyPush(message);
        if (job.job_id === "") throw new Error("the pushed job has no job_id");
      } catch (error) {
        this.options.onBadPush(error as Error);
        return;
      }
      // Its failure is published to the gateway and reported again with the queued copy.
      this.take(job.job_id, job, "push").catch(() => undefined);
    });
    await subscribe(subscriber, verifyPushChannel(replicaId));
  }

  /**
   * Jobs taken from their pushed copy whose queued copy has not been handed in: answered through the reply, but still
   * waiting in the queue. A draining replica removes them there, so that nobody takes them again.
   */
  answeredButQueued(): string[] {
    const ids: string[] = [];
    for (const generation of [this.#previous, this.#current]) {
      for (const [jobId, taken] of generation) if (!taken.queued) ids.push(jobId);
    }
    return ids;
  }

  counters(): IntakeCounters {
    return { jobsFromQueue: this.#jobsFromQueue, repliesRepeated: this.#repliesRepeated };
  }

  close(): void {
    clearInterval(this.#rotation);
  }

  async #verify(job: VerifyJob__Output): Promise<VerifyResult> {
    try {
      return await this.options.verify(job);
    } catch (error) {
      throw asVerifyJobError(error);
    }
  }

  #reply(
    taken: Taken,
    job: VerifyJob__Output,
    reply: { job_id: string; result?: VerifyResult; failure?: string },
  ): void {
    const { result } = reply;
    // A history_needed answer verified nothing: the draft hears the verdict of the round sent again.
    if (result !== undefined && !result.history_needed && job.draft_verdict_channel !== "") {
      const { sequence_id, round, accepted, next_token, path } = result;
      this.#publish(job.draft_verdict_channel, encodeDraftVerdict({ sequence_id, round, accepted, next_token, path }));
    }
    if (job.reply_channel === "") return;
    taken.reply = { channel: job.reply_channel, message: encodeVerifyReply(reply) };
    this.#publish(taken.reply.channel, taken.reply.message);
  }

  #publish(channel: string, message: Buffer): void {
    this.options.publish(channel, message).catch(this.options.onPublishError);
  }
}
