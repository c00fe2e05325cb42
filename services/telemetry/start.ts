/**
 * Start-up and shutdown of a service's telemetry (OpenTelemetry SDK for Node.js plus the Prometheus scrape endpoint).
 *
 * One per process: the SDK registers global providers, which shutdown unregisters so that a process (a test) can start
 * telemetry again afterwards.
 */
import { type ContextManager, context, diag, metrics, propagation, ROOT_CONTEXT, trace } from "@opentelemetry/api";
import { OTLPMetricExporter as OtlpGrpcMetricExporter } from "@opentelemetry/exporter-metrics-otlp-grpc";
import { OTLPMetricExporter as OtlpJsonMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http";
import { OTLPMetricExporter as OtlpProtobufMetricExporter } from "@opentelemetry/exporter-metrics-otlp-proto";
import { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
import { ConsoleMetricExporter, type IMetricReader, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { NodeSDK } from "@opentelemetry/sdk-node";
import type { SpanProcessor } from "@opentelemetry/sdk-trace";
import { ATTR, TELEMETRY_SCOPE } from "./attributes.ts";
import { SpecgateMetrics } from "./metrics.ts";
import { DEFAULT_METRICS_HOST, type MetricsEndpoint, openMetricsEndpoint } from "./metrics-endpoint.ts";
import { type Env, type OtlpProtocol, type TelemetryPlan, telemetryPlan } from "./telemetry-plan.ts";

export type ServiceName = "specgate-gateway" | "specgate-draft" | "specgate-target";

export interface TelemetryOptions {
  serviceName: ServiceName;
  /** Target replica index (a resource attribute and the metrics label of the replica). */
  replica?: number;
  /** Prometheus scrape endpoint; port 0 picks a free port. Host defaults to OTEL_EXPORTER_PROMETHEUS_HOST, then 127.0.0.1. */
  metrics: { port: number; host?: string };
  /** Variables that decide which exporters run (default process.env); OTLP exporters read theirs from process.env. */
  env?: Env;
  /** Replaces the span processors chosen from the environment (tests and benchmarks use an in-memory exporter). */
  spanProcessors?: SpanProcessor[];
  /** Metric readers added to those chosen from the environment. */
  metricReaders?: IMetricReader[];
}

export interface Telemetry {
  readonly serviceName: ServiceName;
  /** True when spans are recorded and exported; false means every span is a no-op. */
  readonly tracing: boolean;
  /** URL of the Prometheus scrape endpoint, undefined when metrics are off. */
  readonly metricsUrl: string | undefined;
  readonly metrics: SpecgateMetrics;
  readonly plan: TelemetryPlan;
  /** Flushes what is pending, stops the exporters and frees the scrape port. */
  shutdown(): Promise<void>;
}

let active: ServiceName | undefined;

/**
 * specgate hands trace contexts over explicitly (request → round → carrier), never through an ambient "active"
 * context, so no async context tracking is installed: on Node 20 the SDK's AsyncLocalStorage manager would add
 * promise hooks to every await of the service from the span exporter's first export on, which costs more than all
 * the spans together. `context.active()` is therefore always the root context.
 */
const EXPLICIT_CONTEXT_ONLY: ContextManager = {
  active: () => ROOT_CONTEXT,
  with: (_context, fn, thisArg, ...args) => fn.call(thisArg, ...args),
  bind: (_context, target) => target,
  enable() {
    return this;
  },
  disable() {
    return this;
  },
};

function otlpMetricReader(protocol: OtlpProtocol, env: Env): IMetricReader {
  const exporter =
    protocol === "grpc"
      ? new OtlpGrpcMetricExporter()
      : protocol === "http/json"
        ? new OtlpJsonMetricExporter()
        : new OtlpProtobufMetricExporter();
  const interval = Number(env.OTEL_METRIC_EXPORT_INTERVAL);
  const exportIntervalMillis = interval > 0 ? interval : 60_000;
  return new PeriodicExportingMetricReader({
    exporter,
    exportIntervalMillis,
    exportTimeoutMillis: Math.min(30_000, exportIntervalMillis),
  });
}

export async function startTelemetry(options: TelemetryOptions): Promise<Telemetry> {
  if (active !== undefined) {
    throw new Error(`telemetry is already running in this process for ${active}; shut it down first`);
  }
  const env = options.env ?? process.env;
  const plan = telemetryPlan(env);
  for (const item of plan.ignored) diag.warn(`specgate telemetry: ignoring unsupported ${item}`);

  if (plan.disabled) {
    return {
      serviceName: options.serviceName,
      tracing: false,
      metricsUrl: undefined,
      metrics: new SpecgateMetrics(metrics.getMeter(TELEMETRY_SCOPE)),
      plan,
      shutdown: async () => {},
    };
  }
  active = options.serviceName;

  let endpoint: MetricsEndpoint | undefined;
  try {
    const readers: IMetricReader[] = [...(options.metricReaders ?? [])];
    if (plan.metricExporters.includes("prometheus")) {
      const host = options.metrics.host ?? env.OTEL_EXPORTER_PROMETHEUS_HOST ?? DEFAULT_METRICS_HOST;
      endpoint = await openMetricsEndpoint(host, options.metrics.port);
      readers.push(endpoint.reader);
    }
    if (plan.metricExporters.includes("otlp")) readers.push(otlpMetricReader(plan.otlpMetricsProtocol, env));
    if (plan.metricExporters.includes("console")) {
      readers.push(new PeriodicExportingMetricReader({ exporter: new ConsoleMetricExporter() }));
    }

    const tracing = options.spanProcessors !== undefined || plan.traceExporters.length > 0;
    const sdk = new NodeSDK({
      serviceName: options.serviceName,
      ...(options.replica === undefined
        ? {}
        : { resource: defaultResource().merge(resourceFromAttributes({ [ATTR.replica]: String(options.replica) })) }),
      metricReaders: readers,
      // Undefined lets the SDK build the exporters named by OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_*.
      spanProcessors: tracing ? options.spanProcessors : [],
      logRecordProcessors: [],
      // Without tracing there is nothing to propagate: keep the API's no-op propagator.
      textMapPropagator: tracing ? undefined : null,
      contextManager: EXPLICIT_CONTEXT_ONLY,
    });
    sdk.start();

    const telemetry: Telemetry = {
      serviceName: options.serviceName,
      tracing,
      metricsUrl: endpoint?.url,
      metrics: new SpecgateMetrics(metrics.getMeter(TELEMETRY_SCOPE)),
      plan,
      shutdown: async () => {
        try {
          await sdk.shutdown();
        } finally {
          await endpoint?.close();
          trace.disable();
          metrics.disable();
          propagation.disable();
          context.disable();
          active = undefined;
        }
      },
    };
    return telemetry;
  } catch (error) {
    await endpoint?.close();
    active = undefined;
    throw error;
  }
}
