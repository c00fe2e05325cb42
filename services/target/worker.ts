/**
 * The queue side of a replica: a BullMQ Worker on `verify-<replicaId>` whose processor decodes each job, checks it
 * may be taken (model, deadline), hands it to the micro-batcher and completes the job with the encoded VerifyResult.
 *
 * Failures reach the gateway as the job's failedReason "<STATUS>: <detail>" (verify-errors.ts). Failures retrying
 * cannot fix are UnrecoverableErrors, so BullMQ does not retry them even when the gateway enqueued with attempts > 1.
 */
import { type Job, UnrecoverableError, Worker } from "bullmq";
import type { VerifyJob__Output } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult } from "../../gen/specgate/v1/VerifyResult.ts";
import {
  decodeVerifyJob,
  encodeVerifyResult,
  QUEUE_PREFIX,
  type VerifyJobData,
  verifyQueueName,
} from "../../proto/verify-queue.ts";
import type { MicroBatcher } from "./batcher.ts";
import { VerifyJobError } from "./verify-errors.ts";
import { checkAdmission, nowUnixMs } from "./verify-job.ts";

export interface VerifyWorkerOptions {
  readonly redisUrl: string;
  readonly replicaId: string;
  readonly modelName: string;
  readonly batcher: MicroBatcher<VerifyJob__Output, VerifyResult>;
  /**
   * Jobs taken off the queue at once. More than the batch size, so the next batch's jobs are fetched while one runs.
   */
  readonly concurrency: number;
}

function asJobFailure(error: unknown): Error {
  if (error instanceof VerifyJobError && error.code !== "UNAVAILABLE") return new UnrecoverableError(error.message);
  return error instanceof Error ? error : new Error(String(error));
}

export function startVerifyWorker(options: VerifyWorkerOptions): Worker<VerifyJobData, string> {
  const { batcher, modelName } = options;
  const process = async (job: Job<VerifyJobData, string>): Promise<string> => {
    let verifyJob: VerifyJob__Output;
    try {
      verifyJob = decodeVerifyJob(job.data);
      checkAdmission(verifyJob, modelName, nowUnixMs());
    } catch (error) {
      throw asJobFailure(
        error instanceof VerifyJobError
          ? error
          : new VerifyJobError("INVALID_ARGUMENT", `job ${job.id} is not a VerifyJob: ${(error as Error).message}`),
      );
    }
    try {
      return encodeVerifyResult(await batcher.submit(verifyJob));
    } catch (error) {
      throw asJobFailure(error);
    }
  };
  return new Worker<VerifyJobData, string>(verifyQueueName(options.replicaId), process, {
    connection: { url: options.redisUrl },
    prefix: QUEUE_PREFIX,
    concurrency: options.concurrency,
  });
}
