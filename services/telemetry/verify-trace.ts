/**
 * The trace of one batched verify on a target replica.
 *
 * A batch serves rounds of many requests, so it cannot live in any one request's trace. It gets its own span, linked
 * to the span of every round it served (OpenTelemetry messaging conventions for batch processing), and each job gets
 * a consumer span inside its own request's trace: started at the job's enqueue time, so its length shows the queue
 * wait followed by the verify, and linked back to the batch span.
 */
import { type Link, ROOT_CONTEXT, type Span, SpanKind, trace } from "@opentelemetry/api";
import { ATTR, TELEMETRY_SCOPE } from "./attributes.ts";
import type { SpecgateMetrics } from "./metrics.ts";
import { extractFromCarrier, type TraceCarrier } from "./propagation.ts";

export const VERIFY_BATCH_SPAN_NAME = "specgate.verify.batch";
export const VERIFY_JOB_SPAN_NAME = "specgate.verify";
export const DEQUEUED_EVENT_NAME = "specgate.verify.dequeued";

export interface VerifyJobTrace {
  /** Trace context the gateway put in the job (injectIntoCarrier of the round's context). */
  trace?: TraceCarrier;
  /** When the job was enqueued, in epoch milliseconds (the BullMQ job's `timestamp`). */
  enqueuedAtMs: number;
}

export interface VerifyJobOutcome {
  proposed: number;
  accepted: number;
}

export interface VerifyBatchTrace {
  /** Queue wait of each job in milliseconds, in the order given; also recorded on the spans and in the metrics. */
  readonly queueWaitsMs: readonly number[];
  /** Ends the batch: outcomes (same order as the jobs) go on each job's span. */
  end(outcomes?: readonly VerifyJobOutcome[]): void;
}

export interface VerifyBatchOptions {
  replica: string;
  jobs: readonly VerifyJobTrace[];
  metrics?: SpecgateMetrics;
}

export function startVerifyBatch(options: VerifyBatchOptions): VerifyBatchTrace {
  const { replica, jobs, metrics } = options;
  const startedAtMs = Date.now();
  const startedAt = performance.now();
  // Clocks of different hosts disagree a little; a negative wait is skew, not time travel.
  const queueWaitsMs = jobs.map((job) => Math.max(0, startedAtMs - job.enqueuedAtMs));
  const tracer = trace.getTracer(TELEMETRY_SCOPE);
  const batchAttributes = { [ATTR.replica]: replica, [ATTR.batchSize]: jobs.length };

  const batchSpan = tracer.startSpan(
    VERIFY_BATCH_SPAN_NAME,
    { kind: SpanKind.CONSUMER, attributes: batchAttributes },
    ROOT_CONTEXT,
  );
  const jobSpans: (Span | undefined)[] = [];
  // With tracing off the batch span is a no-op: skip extracting contexts and building links altogether.
  if (batchSpan.isRecording()) {
    const links: Link[] = [];
    jobs.forEach((job, i) => {
      const jobContext = extractFromCarrier(job.trace);
      const spanContext = trace.getSpanContext(jobContext);
      if (spanContext === undefined) {
        jobSpans.push(undefined);
        return;
      }
      links.push({ context: spanContext, attributes: { [ATTR.queueWaitMs]: queueWaitsMs[i] } });
      const span = tracer.startSpan(
        VERIFY_JOB_SPAN_NAME,
        {
          kind: SpanKind.CONSUMER,
          startTime: Math.min(job.enqueuedAtMs, startedAtMs),
          attributes: { ...batchAttributes, [ATTR.queueWaitMs]: queueWaitsMs[i] },
          links: [{ context: batchSpan.spanContext() }],
        },
        jobContext,
      );
      span.addEvent(DEQUEUED_EVENT_NAME, startedAtMs);
      jobSpans.push(span);
    });
    batchSpan.addLinks(links);
  }

  return {
    queueWaitsMs,
    end: (outcomes) => {
      jobSpans.forEach((span, i) => {
        const outcome = outcomes?.[i];
        if (outcome !== undefined) {
          span?.setAttributes({ [ATTR.proposed]: outcome.proposed, [ATTR.accepted]: outcome.accepted });
        }
        span?.end();
      });
      batchSpan.end();
      metrics?.recordVerifyBatch(replica, { queueWaitsMs, durationMs: performance.now() - startedAt });
    },
  };
}
