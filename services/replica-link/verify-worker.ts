/**
 * The queue side of a replica: a BullMQ Worker on `verify-<replicaId>` whose processor decodes each job, takes it in
 * through the intake (which checks it may be taken, batches it, or finds it verified already from its pushed copy)
 * and completes the job with the encoded VerifyResult.
 *
 * Failures reach the gateway as the job's failedReason "<STATUS>: <detail>" (verify-errors.ts). Failures retrying
 * cannot fix are UnrecoverableErrors, so BullMQ does not retry them even when the gateway enqueued with attempts > 1.
 */
import { type Job, UnrecoverableError, Worker } from "bullmq";
import type { VerifyJob__Output } from "../../gen/specgate/v1/VerifyJob.ts";
import {
  decodeVerifyJob,
  encodeVerifyResult,
  QUEUE_PREFIX,
  type VerifyJobData,
  verifyQueueName,
} from "../../proto/verify-queue.ts";
import { closeQueueConnection, queueConnection, type RedisTarget } from "./redis-target.ts";
import { asVerifyJobError, VerifyJobError } from "./verify-errors.ts";
import type { VerifyIntake } from "./verify-intake.ts";

export interface VerifyWorkerOptions {
  readonly redis: RedisTarget;
  readonly replicaId: string;
  readonly intake: VerifyIntake;
  /**
   * Jobs taken off the queue at once. More than the batch size, so the next batch's jobs are fetched while one runs.
   */
  readonly concurrency: number;
}

function asJobFailure(error: VerifyJobError): Error {
  return error.code === "UNAVAILABLE" ? error : new UnrecoverableError(error.message);
}

export function startVerifyWorker(options: VerifyWorkerOptions): Worker<VerifyJobData, string> {
  const { intake } = options;
  const process = async (job: Job<VerifyJobData, string>): Promise<string> => {
    // The copy of a job whose push was taken is not decoded again: it completes with the push's outcome (and the
    // intake publishes that outcome again: a job the gateway queued after its push means no reply had reached it).
    let outcome = job.id === undefined ? undefined : intake.taken(job.id, "queue");
    if (outcome === undefined) {
      let verifyJob: VerifyJob__Output;
      try {
        verifyJob = decodeVerifyJob(job.data);
      } catch (error) {
        throw asJobFailure(
          new VerifyJobError("INVALID_ARGUMENT", `job ${job.id} is not a VerifyJob: ${(error as Error).message}`),
        );
      }
      outcome = intake.take(job.id ?? verifyJob.job_id, verifyJob, "queue");
    }
    try {
      return encodeVerifyResult(await outcome);
    } catch (error) {
      throw asJobFailure(asVerifyJobError(error));
    }
  };
  const connection = queueConnection(options.redis);
  const worker = new Worker<VerifyJobData, string>(verifyQueueName(options.replicaId), process, {
    connection,
    prefix: QUEUE_PREFIX,
    concurrency: options.concurrency,
  });
  return worker.on("closed", () => void closeQueueConnection(connection));
}
