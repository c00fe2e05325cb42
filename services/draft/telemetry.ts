/**
 * The draft service's metrics and traces (services/telemetry) hung on its seams: one span per draft inside the
 * requesting round's trace (ProposeRequest.trace_context; a draft on a verdict hangs off the round it settled), draft
 * KV cache bytes, and evictions.
 */
import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { ATTR, TELEMETRY_SCOPE } from "../telemetry/attributes.ts";
import { extractFromCarrier, type SpecgateMetrics } from "../telemetry/index.ts";
import { DraftFailure } from "./draft-failure.ts";
import type { DraftService } from "./server.ts";

export const DRAFT_SPAN_NAME = "specgate.draft";
/** The draft service is one replica as far as metrics labels go. */
const REPLICA = "draft";

export function instrumentDraftService(service: DraftService, metrics: SpecgateMetrics): void {
  const tracer = trace.getTracer(TELEMETRY_SCOPE);
  service.observe((call, outcome) => {
    const span = tracer.startSpan(
      DRAFT_SPAN_NAME,
      {
        kind: SpanKind.SERVER,
        startTime: performance.timeOrigin + call.started,
        attributes: { [ATTR.round]: call.round, [ATTR.k]: call.k, [ATTR.draftOnVerdict]: call.onVerdict },
      },
      extractFromCarrier({ ...call.traceContext }),
    );
    if (outcome instanceof DraftFailure) {
      span.setAttribute(ATTR.errorType, outcome.code);
      span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.message });
    } else {
      span.setAttributes({
        [ATTR.drafter]: outcome.drafter,
        [ATTR.proposed]: outcome.tokens.length,
        [ATTR.draftMs]: outcome.draftTimeMs,
        [ATTR.reprefilled]: outcome.prefilled,
      });
    }
    span.end();
  });
  metrics.observeKvCache("draft", REPLICA, () => service.sequences.cacheBytes());
}

/** Sequence-table events for the metrics (pass as `events` when starting the server). */
export function draftMetricsEvents(metrics: SpecgateMetrics): { evicted: () => void } {
  return { evicted: () => metrics.recordKvEvictions("draft", REPLICA) };
}
