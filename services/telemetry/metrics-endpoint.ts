/**
 * The Prometheus scrape endpoint of one service: `GET /metrics` in the Prometheus text format.
 *
 * The exporter's own HTTP server cannot listen on port 0 (it treats 0 as "use 9464") and does not close idle
 * keep-alive connections on shutdown, so the port would stay busy; this module owns the server instead.
 */
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";

export type ServiceRole = "gateway" | "draft" | "target";

/** Default ports: gateway 9464, draft 9465, target replica r 9466 + r. */
export function defaultMetricsPort(role: ServiceRole, replica = 0): number {
  if (role === "gateway") return 9464;
  if (role === "draft") return 9465;
  return 9466 + replica;
}

export const DEFAULT_METRICS_HOST = "127.0.0.1";

export interface MetricsEndpoint {
  readonly reader: PrometheusExporter;
  /** `http://host:port/metrics` with the port actually bound (useful with port 0). */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export async function openMetricsEndpoint(host: string, port: number): Promise<MetricsEndpoint> {
  const reader = new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true });
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? "").split("?")[0];
    if (request.method === "GET" && path === "/metrics") {
      reader.getMetricsRequestHandler(request, response);
    } else {
      response.statusCode = 404;
      response.end();
    }
  });
  // A scrape endpoint must never keep a service alive on its own.
  server.unref();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new Error(
      `cannot open the Prometheus metrics endpoint on ${host}:${port} (${code ?? String(error)}); ` +
        "choose another metrics port in the service configuration",
      { cause: error },
    );
  }
  const bound = (server.address() as AddressInfo).port;
  const shownHost = host.includes(":") ? `[${host}]` : host;
  return {
    reader,
    port: bound,
    url: `http://${shownHost}:${bound}/metrics`,
    close: async () => {
      const closed = once(server, "close");
      server.close();
      server.closeAllConnections();
      await closed;
    },
  };
}
