/**
 * The trace of one generation request at the gateway: a server span carrying the request's totals, named and
 * labelled by OpenTelemetry's conventions for the transport that brought it (gRPC or HTTP), and its rounds. Rounds are
 * recorded either as child spans (the draft and verify work of a round then nests under it) or as events on the
 * request span; `bench/telemetry.ts` measures both and ROUND_SPANS holds the decision.
 * Each round and the request are also recorded in the metrics, from the same records, so traces and scrapes agree.
 */
import {
  type Attributes,
  type Context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
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

/**
 * gRPC codes a server reports as span errors (OpenTelemetry gRPC conventions); client faults stay unset. Over HTTP
 * these codes are 5xx answers, or a stream that failed after its 200.
 */
const SERVER_ERROR_STATUSES = new Set([
  "UNKNOWN",
  "DEADLINE_EXCEEDED",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
]);

/** How a request came: its span's name and attributes, and the duration metric it is recorded in. */
export type RequestTransport =
  /** `method`: fully qualified, e.g. `specgate.v1.Gateway/GenerateStream`: the span name and `rpc.method`. */
  | { readonly protocol: "grpc"; readonly method: string }
  /** `method` and `route` (`POST`, `/v1/completions`): the span name is both, as HTTP's conventions name it. */
  | { readonly protocol: "http"; readonly method: string; readonly route: string };

/** The request span's name. */
export function requestSpanName(transport: RequestTransport): string {
  return transport.protocol === "grpc" ? transport.method : `${transport.method} ${transport.route}`;
}

function transportAttributes(transport: RequestTransport): Attributes {
  return transport.protocol === "grpc"
    ? { [ATTR.rpcSystem]: RPC_SYSTEM_GRPC, [ATTR.rpcMethod]: transport.method }
    : { [ATTR.httpMethod]: transport.method, [ATTR.httpRoute]: transport.route };
}

export interface RequestTraceOptions {
  transport: RequestTransport;
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
  const { transport, labels, metrics } = options;
  const parent = options.parent ?? ROOT_CONTEXT;
  const startedAt = performance.now();
  const tracer = trace.getTracer(TELEMETRY_SCOPE);
  const span = tracer.startSpan(requestSpanName(transport), { kind: SpanKind.SERVER }, parent);
  const recording = span.isRecording();
  // With tracing off the span is a no-op: skip building attributes and contexts altogether.
  const requestContext = recording ? trace.setSpan(parent, span) : parent;
  if (recording) {
    span.setAttributes({
      ...transportAttributes(transport),
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
      const errorType = serverErrorType(transport, request);
      if (recording) endServerSpan(span, transport, request, errorType);
      metrics?.recordRequest(labels, request);
      const durationMs = performance.now() - startedAt;
      if (transport.protocol === "grpc") metrics?.recordRpc(transport.method, request.status, durationMs);
      else metrics?.recordHttpRequest(transport, httpStatusCode(request), errorType, durationMs);
    },
  };
}

/** The HTTP response's status; a caller that did not say gets the status an OK or a failed request would have. */
function httpStatusCode(request: FinishedRequest): number {
  return request.httpStatusCode ?? (request.status === "OK" ? 200 : 500);
}

/**
 * `error.type` of a request the server failed, undefined otherwise. HTTP's conventions use the 5xx status code; a
 * stream that failed after its 200 has no such code, so its gRPC status names the error.
 */
function serverErrorType(transport: RequestTransport, request: FinishedRequest): string | undefined {
  if (transport.protocol === "http" && httpStatusCode(request) >= 500) return String(httpStatusCode(request));
  return SERVER_ERROR_STATUSES.has(request.status) ? request.status : undefined;
}

function endServerSpan(
  span: Span,
  transport: RequestTransport,
  request: FinishedRequest,
  errorType: string | undefined,
): void {
  span.setAttributes(finishedRequestAttributes(request));
  // Over HTTP the gateway's own outcome stays readable beside the status code, under the requests counter's name.
  span.setAttributes(
    transport.protocol === "grpc"
      ? { [ATTR.rpcStatus]: request.status }
      : { [ATTR.httpStatus]: httpStatusCode(request), [ATTR.requestStatus]: request.status },
  );
  if (errorType !== undefined) {
    span.setAttribute(ATTR.errorType, errorType);
    span.setStatus({ code: SpanStatusCode.ERROR, message: request.status });
  }
  span.end();
}
