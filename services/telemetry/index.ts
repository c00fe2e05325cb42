/** Public surface of specgate's telemetry library: what the gateway, draft and target services call. */
export { ATTR } from "./attributes.ts";
export { METRICS, SpecgateMetrics } from "./metrics.ts";
export { DEFAULT_METRICS_HOST, defaultMetricsPort, type ServiceRole } from "./metrics-endpoint.ts";
export {
  extractFromCarrier,
  extractFromMetadata,
  injectIntoCarrier,
  injectIntoMetadata,
  type TraceCarrier,
} from "./propagation.ts";
export type { FinishedRequest, RequestLabels, ReturnedStats, VerifiedRound } from "./records.ts";
export {
  type RequestTrace,
  type RequestTransport,
  type RoundTrace,
  requestSpanName,
  startRequestTrace,
} from "./request-trace.ts";
export type { RequestParameters } from "./span-attributes.ts";
export { type ServiceName, startTelemetry, type Telemetry, type TelemetryOptions } from "./start.ts";
export { startVerifyBatch, type VerifyBatchTrace, type VerifyJobOutcome, type VerifyJobTrace } from "./verify-trace.ts";
