/**
 * The replica's metrics and traces (services/telemetry) hung on the seam of verify-round.ts: one batch span linked to
 * every round it served, per-job spans in their requests' traces, batch size, duration and queue waits, jobs waiting,
 * target KV cache bytes and evictions.
 */

import { VerifyJobError } from "../replica-link/verify-errors.ts";
import { type SpecgateMetrics, startVerifyBatch, type VerifyJobOutcome } from "../telemetry/index.ts";
import type { TargetReplica } from "./target-replica.ts";
import { draftSize } from "./verify-job.ts";

export function instrumentReplica(replica: TargetReplica, metrics: SpecgateMetrics): void {
  const id = replica.replicaId;
  replica.verifyRound.observe((jobs) => {
    const trace = startVerifyBatch({
      replica: id,
      jobs: jobs.map((job) => ({ trace: job.trace_context, enqueuedAtMs: job.enqueued_at_unix_ms || Date.now() })),
      metrics,
    });
    return (report) => {
      // Failed jobs get no outcome on their spans (a sparse array).
      const outcomes = new Array<VerifyJobOutcome>(report.jobs.length);
      report.outcomes.forEach((outcome, i) => {
        if (!(outcome instanceof VerifyJobError)) {
          outcomes[i] = { proposed: draftSize(report.jobs[i]), accepted: outcome.accepted ?? 0 };
        }
      });
      trace.end(outcomes);
      if (report.evicted > 0) metrics.recordKvEvictions("target", id, report.evicted);
    };
  });
  metrics.observeKvCache("target", id, () => replica.stats().cache_bytes as number);
  metrics.observeQueueDepth(id, () => replica.waitingJobs());
}
