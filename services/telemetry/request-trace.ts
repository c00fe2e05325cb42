/**
 * The trace of one generation request at the gateway: a gRPC server span carrying the request's totals, and its
 * rounds. Rounds are recorded either as child spans (the draft and verify work of a round then nests under it) or as
 * events on the request span; `bench/telemetry.ts` measures both and ROUND_SPANS holds the decision.
 * Each round and the request are also recorded in the metrics, from the same records, so traces and scrapes agree.
 */
import { type Context, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { ATTR, GEN_AI_OPERATION_TEXT_COMPLETION, RPC_SYSTEM_GRPC, TELEMETRY_SCOPE } from "./attributes.ts";
import type { SpecgateMetrics } from "./metrics.ts";
import type { FinishedRequest, RequestLabels, VerifiedRound } from "./records.ts";
import {
  finishedRequestAttributes,
  type RequestParameters,
  requestLabelAttributes,
  requestParameterAttributes,
  roundAttributes,
} from "./span-attributes.ts";

/** Rounds as child spans (true) or as events on the request span (false); see the decision in README.md. */
export const ROUND_SPANS = true;

export const ROUND_SPAN_NAME = "specgate.round";
export const ROUND_EVENT_NAME = "specgate.round";

/** gRPC codes a server reports as span errors (OpenTelemetry gRPC conventions); client faults stay unset. */
const SERVER_ERROR_STATUSES = new Set([
  "UNKNOWN",
  "DEADLINE_EXCEEDED",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
]);

export interface RequestTraceOptions {
  /** Fully qualified gRPC method, e.g. `specgate.v1.Gateway/GenerateStream`: the span name and `rpc.method`. */
  method: string;
  /** Context extracted from the incoming call's metadata (extractFromMetadata); a new trace when absent. */
  parent?: Context;
  labels: RequestLabels;
  parameters?: RequestParameters;
  /** Where rounds and the request are also counted; omitted in code paths without telemetry. */
  metrics?: SpecgateMetrics;
  roundSpans?: boolean;
}

export interface RoundTrace {
  /** Context to propagate into the round's draft call and verify job. */
  readonly context: Context;
  end(round: VerifiedRound): void;
}

export interface RequestTrace {
  /** Context of the request span, for calls made outside a round. */
  readonly context: Context;
  startRound(): RoundTrace;
  end(request: FinishedRequest): void;
}

export function startRequestTrace(options: RequestTraceOptions): RequestTrace {
  const { method, labels, metrics } = options;
  const parent = options.parent ?? ROOT_CONTEXT;
  const startedAt = performance.now();
  const tracer = trace.getTracer(TELEMETRY_SCOPE);
  const span = tracer.startSpan(method, { kind: SpanKind.SERVER }, parent);
  const recording = span.isRecording();
  // With tracing off the span is a no-op: skip building attributes and contexts altogether.
  const requestContext = recording ? trace.setSpan(parent, span) : parent;
  if (recording) {
    span.setAttributes({
      [ATTR.rpcSystem]: RPC_SYSTEM_GRPC,
      [ATTR.rpcMethod]: method,
      [ATTR.genAiOperation]: GEN_AI_OPERATION_TEXT_COMPLETION,
      ...requestLabelAttributes(labels),
      ...requestParameterAttributes(options.parameters ?? {}),
    });
  }
  const roundSpans = options.roundSpans ?? ROUND_SPANS;
  /** Round spans started and not ended (a round starts before the previous one has streamed its tokens). */
  const openRounds = new Set<Span>();
  const untracedRound: RoundTrace = {
    context: requestContext,
    end: (round) => metrics?.recordRound(labels, round),
  };

  return {
    context: requestContext,
    startRound: () => {
      if (!recording) return untracedRound;
      if (!roundSpans) {
        return {
          context: requestContext,
          end: (round) => {
            span.addEvent(ROUND_EVENT_NAME, roundAttributes(round));
            metrics?.recordRound(labels, round);
          },
        };
      }
      const roundSpan = tracer.startSpan(ROUND_SPAN_NAME, { kind: SpanKind.INTERNAL }, requestContext);
      openRounds.add(roundSpan);
      return {
        context: trace.setSpan(requestContext, roundSpan),
        end: (round) => {
          roundSpan.setAttributes(roundAttributes(round));
          roundSpan.end();
          openRounds.delete(roundSpan);
          metrics?.recordRound(labels, round);
        },
      };
    },
    end: (request) => {
      // A round cut short (cancellation, deadline, failure) still belongs in the trace, marked as such.
      for (const roundSpan of openRounds) {
        roundSpan.setAttribute(ATTR.roundAbandoned, true);
        roundSpan.end();
      }
      openRounds.clear();
      if (recording) endServerSpan(span, request);
      metrics?.recordRequest(labels, request);
      metrics?.recordRpc(method, request.status, performance.now() - startedAt);
    },
  };
}

function endServerSpan(span: Span, request: FinishedRequest): void {
  span.setAttributes(finishedRequestAttributes(request));
  if (SERVER_ERROR_STATUSES.has(request.status)) {
    span.setAttribute(ATTR.errorType, request.status);
    span.setStatus({ code: SpanStatusCode.ERROR, message: request.status });
  }
  span.end();
}
