/**
 * A real OTLP receiver on loopback for tests: OTLP/HTTP (JSON and protobuf) on one node:http server, OTLP/gRPC on a
 * grpc-js server. JSON exports are parsed into spans and metric names; protobuf bodies are kept as bytes (strings
 * such as span names and attribute keys appear in them verbatim).
 */
import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";

export type Signal = "traces" | "metrics" | "logs";

export interface Export {
  signal: Signal;
  protocol: "http/json" | "http/protobuf" | "grpc";
  body: Buffer;
}

type AnyValue = {
  stringValue?: string;
  intValue?: number | string;
  doubleValue?: number;
  boolValue?: boolean;
  arrayValue?: { values?: AnyValue[] };
};
type KeyValue = { key: string; value: AnyValue };

export interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  links: { traceId: string; spanId: string }[];
  events: { name: string; attributes: Record<string, unknown> }[];
}

export interface ReceivedMetric {
  service: string;
  name: string;
  unit: string;
}

function decodeValue(value: AnyValue): unknown {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.arrayValue !== undefined) return (value.arrayValue.values ?? []).map(decodeValue);
  return undefined;
}

function decodeAttributes(attributes: KeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((attributes ?? []).map(({ key, value }) => [key, decodeValue(value)]));
}

// OTLP/JSON writes ids as hex; some encoders write base64. Normalise to hex.
function hexId(id: string | undefined): string {
  if (id === undefined || id === "") return "";
  return /^[0-9a-f]+$/i.test(id) ? id.toLowerCase() : Buffer.from(id, "base64").toString("hex");
}

export class OtlpReceiver {
  readonly exports: Export[] = [];
  private waiters: (() => void)[] = [];

  private constructor(
    private readonly http: HttpServer,
    private readonly grpcServer: grpc.Server,
    /** Base URL for OTEL_EXPORTER_OTLP_ENDPOINT with the http protocols. */
    readonly httpUrl: string,
    /** Base URL for OTEL_EXPORTER_OTLP_ENDPOINT with the grpc protocol. */
    readonly grpcUrl: string,
  ) {}

  static async start(): Promise<OtlpReceiver> {
    let receiver: OtlpReceiver | undefined;
    const record = (item: Export) => receiver?.record(item);
    const http = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const signal = (request.url ?? "").replace(/^\/v1\//, "") as Signal;
        const json = (request.headers["content-type"] ?? "").includes("json");
        record({ signal, protocol: json ? "http/json" : "http/protobuf", body: Buffer.concat(chunks) });
        response.statusCode = 200;
        response.setHeader("content-type", json ? "application/json" : "application/x-protobuf");
        response.end(json ? "{}" : "");
      });
    });
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));

    const grpcServer = new grpc.Server();
    const raw = (b: Buffer) => b;
    for (const [signal, service] of [
      ["traces", "opentelemetry.proto.collector.trace.v1.TraceService"],
      ["metrics", "opentelemetry.proto.collector.metrics.v1.MetricsService"],
    ] as const) {
      grpcServer.addService(
        {
          Export: {
            path: `/${service}/Export`,
            requestStream: false,
            responseStream: false,
            requestSerialize: raw,
            requestDeserialize: raw,
            responseSerialize: raw,
            responseDeserialize: raw,
          },
        },
        {
          Export: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
            record({ signal, protocol: "grpc", body: call.request });
            callback(null, Buffer.alloc(0));
          },
        },
      );
    }
    const grpcPort = await new Promise<number>((resolve, reject) =>
      grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) =>
        error ? reject(error) : resolve(port),
      ),
    );
    const httpPort = (http.address() as AddressInfo).port;
    receiver = new OtlpReceiver(http, grpcServer, `http://127.0.0.1:${httpPort}`, `http://127.0.0.1:${grpcPort}`);
    return receiver;
  }

  /** Forgets what was received (long benchmark runs). */
  clear(): void {
    this.exports.length = 0;
  }

  private record(item: Export): void {
    this.exports.push(item);
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** Resolves once `done()` holds, re-checked after every export received; rejects after `timeoutMs`. */
  async waitFor(done: () => boolean, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("timed out waiting for OTLP exports");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  private json(signal: Signal): { resource?: { attributes?: KeyValue[] }; [key: string]: unknown }[] {
    return this.exports
      .filter((item) => item.signal === signal && item.protocol === "http/json")
      .flatMap((item) => {
        const parsed = JSON.parse(item.body.toString("utf8"));
        return signal === "traces" ? parsed.resourceSpans : parsed.resourceMetrics;
      });
  }

  /** Spans received as OTLP/JSON. */
  spans(): ReceivedSpan[] {
    return this.json("traces").flatMap((resourceSpans) => {
      const service = String(decodeAttributes(resourceSpans.resource?.attributes)["service.name"]);
      const scopes = resourceSpans.scopeSpans as { spans: Record<string, unknown>[] }[];
      return scopes.flatMap((scope) =>
        scope.spans.map((span) => ({
          service,
          traceId: hexId(span.traceId as string),
          spanId: hexId(span.spanId as string),
          parentSpanId: hexId(span.parentSpanId as string | undefined),
          name: span.name as string,
          kind: span.kind as number,
          attributes: decodeAttributes(span.attributes as KeyValue[]),
          links: ((span.links ?? []) as { traceId: string; spanId: string }[]).map((link) => ({
            traceId: hexId(link.traceId),
            spanId: hexId(link.spanId),
          })),
          events: ((span.events ?? []) as { name: string; attributes?: KeyValue[] }[]).map((event) => ({
            name: event.name,
            attributes: decodeAttributes(event.attributes),
          })),
        })),
      );
    });
  }

  /** Metric names received as OTLP/JSON. */
  metrics(): ReceivedMetric[] {
    return this.json("metrics").flatMap((resourceMetrics) => {
      const service = String(decodeAttributes(resourceMetrics.resource?.attributes)["service.name"]);
      const scopes = resourceMetrics.scopeMetrics as { metrics: { name: string; unit?: string }[] }[];
      return scopes.flatMap((scope) =>
        scope.metrics.map((metric) => ({ service, name: metric.name, unit: metric.unit ?? "" })),
      );
    });
  }

  async close(): Promise<void> {
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
    await new Promise<void>((resolve) => this.grpcServer.tryShutdown(() => resolve()));
  }
}
