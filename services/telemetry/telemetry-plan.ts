/**
 * Which exporters a service runs, decided from the standard OTEL_* environment variables.
 *
 * specgate's rules on top of the OpenTelemetry defaults:
 * - Traces are off unless asked for: with neither OTEL_TRACES_EXPORTER nor an OTLP endpoint set, no tracer provider is
 *   registered, so spans are the API's non-recording no-ops and no exporter ever runs (the SDK default would be to
 *   export OTLP to localhost:4318 and fail quietly forever).
 * - Metrics always include the service's Prometheus scrape endpoint (part of each service's interface) unless
 *   OTEL_METRICS_EXPORTER contains `none`; OTLP metrics are added when listed or when an OTLP endpoint is set.
 * - OTEL_SDK_DISABLED=true turns everything off, the scrape endpoint included.
 */

export type OtlpProtocol = "grpc" | "http/protobuf" | "http/json";
export type TraceExporterName = "otlp" | "console" | "zipkin";
export type MetricExporterName = "prometheus" | "otlp" | "console";

export interface TelemetryPlan {
  disabled: boolean;
  traceExporters: TraceExporterName[];
  metricExporters: MetricExporterName[];
  /** Protocol of the OTLP metric exporter (the trace exporter's is read by the SDK from the same variables). */
  otlpMetricsProtocol: OtlpProtocol;
  /** Values that were set but are not understood, for a start-up warning. */
  ignored: string[];
}

export type Env = Readonly<Record<string, string | undefined>>;

const TRACE_EXPORTERS: readonly TraceExporterName[] = ["otlp", "console", "zipkin"];
const METRIC_EXPORTERS: readonly MetricExporterName[] = ["prometheus", "otlp", "console"];
const OTLP_PROTOCOLS: readonly OtlpProtocol[] = ["grpc", "http/protobuf", "http/json"];

function list(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((item) => item.trim().toLowerCase())
    .filter((item) => item !== "");
}

function isSet(value: string | undefined): boolean {
  return value !== undefined && value.trim() !== "";
}

function pick<T extends string>(names: string[], known: readonly T[], variable: string, ignored: string[]): T[] {
  const picked: T[] = [];
  for (const name of names) {
    if ((known as readonly string[]).includes(name)) {
      if (!picked.includes(name as T)) picked.push(name as T);
    } else {
      ignored.push(`${variable}=${name}`);
    }
  }
  return picked;
}

export function telemetryPlan(env: Env): TelemetryPlan {
  const ignored: string[] = [];
  const protocolValue = (env.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? "").trim();
  let otlpMetricsProtocol: OtlpProtocol = "http/protobuf";
  if ((OTLP_PROTOCOLS as readonly string[]).includes(protocolValue))
    otlpMetricsProtocol = protocolValue as OtlpProtocol;
  else if (protocolValue !== "") ignored.push(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocolValue}`);

  if ((env.OTEL_SDK_DISABLED ?? "").trim().toLowerCase() === "true") {
    return { disabled: true, traceExporters: [], metricExporters: [], otlpMetricsProtocol, ignored };
  }

  const traceNames = list(env.OTEL_TRACES_EXPORTER);
  let traceExporters: TraceExporterName[];
  if (traceNames.includes("none")) traceExporters = [];
  else if (traceNames.length > 0) traceExporters = pick(traceNames, TRACE_EXPORTERS, "OTEL_TRACES_EXPORTER", ignored);
  else if (isSet(env.OTEL_EXPORTER_OTLP_ENDPOINT) || isSet(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT))
    traceExporters = ["otlp"];
  else traceExporters = [];

  const metricNames = list(env.OTEL_METRICS_EXPORTER);
  let metricExporters: MetricExporterName[];
  if (metricNames.includes("none")) metricExporters = [];
  else if (metricNames.length > 0)
    metricExporters = pick(["prometheus", ...metricNames], METRIC_EXPORTERS, "OTEL_METRICS_EXPORTER", ignored);
  else if (isSet(env.OTEL_EXPORTER_OTLP_ENDPOINT) || isSet(env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT))
    metricExporters = ["prometheus", "otlp"];
  else metricExporters = ["prometheus"];

  return { disabled: false, traceExporters, metricExporters, otlpMetricsProtocol, ignored };
}
