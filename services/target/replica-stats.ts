/** The replica's counters since start, fed by the batch reports of verify-round.ts and read by the Stats RPC. */
import type { TargetStats } from "../../gen/specgate/v1/TargetStats.ts";
import { VerifyJobError } from "../replica-link/verify-errors.ts";
import type { IntakeCounters } from "../replica-link/verify-intake.ts";
import type { SequenceCache } from "./sequence-cache.ts";
import { draftSize } from "./verify-job.ts";
import type { BatchReport } from "./verify-round.ts";

export class ReplicaStats {
  batches = 0;
  /** Jobs completed with a result. */
  jobs = 0;
  /** Jobs failed (bad job, deadline, wrong model, failed forward). */
  failedJobs = 0;
  reprefills = 0;
  /** Jobs answered history_needed (not counted in `jobs`). */
  historyNeeded = 0;
  draftTokens = 0;
  acceptedTokens = 0;
  /** Tokens scored by forwards (uncached history + draft tokens). */
  positions = 0;
  readonly batchesBySize = new Map<number, number>();

  record(report: BatchReport): void {
    if (report.size > 0) {
      this.batches++;
      this.batchesBySize.set(report.size, (this.batchesBySize.get(report.size) ?? 0) + 1);
    }
    this.reprefills += report.reprefills;
    this.positions += report.positions;
    report.outcomes.forEach((outcome, i) => {
      if (outcome instanceof VerifyJobError) {
        this.failedJobs++;
        return;
      }
      if (outcome.history_needed) {
        this.historyNeeded++;
        return;
      }
      this.jobs++;
      this.draftTokens += draftSize(report.jobs[i]);
      this.acceptedTokens += outcome.accepted ?? 0;
    });
  }

  snapshot(
    replica: { replicaId: string; model: string; maxBatchSize: number; maxWaitMs: number },
    cache: SequenceCache,
    intake: IntakeCounters,
  ): TargetStats {
    return {
      replica_id: replica.replicaId,
      model: replica.model,
      sequences: cache.sequences,
      cache_bytes: cache.bytes,
      batches: this.batches,
      jobs: this.jobs,
      batches_by_size: Object.fromEntries(this.batchesBySize),
      reprefills: this.reprefills,
      draft_tokens: this.draftTokens,
      accepted_tokens: this.acceptedTokens,
      max_batch_size: replica.maxBatchSize,
      max_wait_ms: replica.maxWaitMs,
      jobs_from_queue: intake.jobsFromQueue,
      replies_repeated: intake.repliesRepeated,
      history_needed: this.historyNeeded,
    };
  }
}
