/**
 * The HTTP listener of the OpenAI-compatible API, on its own port beside gRPC, with the gateway's TLS settings (the
 * same certificate; client certificates required when gRPC requires them). Hono over @hono/node-server: a small
 * framework with no dependencies of its own and server-sent events built in.
 */
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { readServerTls, type ServerTlsFiles } from "../../services/grpc/tls.ts";
import { type HttpApiContext, httpRoutes } from "./routes.ts";

export interface HttpApiOptions extends HttpApiContext {
  readonly host: string;
  /** 0: a free one. */
  readonly port: number;
  readonly tls?: ServerTlsFiles;
}

export interface RunningHttpApi {
  /** Base URL of the API, e.g. http://127.0.0.1:8000/v1. */
  readonly url: string;
  readonly port: number;
  /** Stops listening and closes every connection (call once the gateway has drained its requests). */
  close(): Promise<void>;
}

function tlsServerOptions(tls: ServerTlsFiles) {
  const { cert, key, clientCa } = readServerTls(tls);
  return clientCa === undefined
    ? { cert, key }
    : { cert, key, ca: clientCa, requestCert: true, rejectUnauthorized: true };
}

export async function startHttpApi(options: HttpApiOptions): Promise<RunningHttpApi> {
  const app = httpRoutes(options);
  const server = createAdaptorServer({
    fetch: app.fetch,
    ...(options.tls === undefined
      ? { createServer: createHttpServer }
      : { createServer: createHttpsServer, serverOptions: tlsServerOptions(options.tls) }),
  }) as Server;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        new Error(
          error.code === "EADDRINUSE"
            ? `HTTP port ${options.port} on ${options.host} is in use: choose another with --http-port or SPECGATE_HTTP_PORT ("off": no HTTP API)`
            : `cannot serve HTTP on ${options.host}:${options.port}: ${error.message}`,
        ),
      ),
    );
    server.listen(options.port, options.host, resolve);
  });
  const { port } = server.address() as AddressInfo;
  const host = options.host.includes(":") ? `[${options.host}]` : options.host;
  return {
    url: `${options.tls === undefined ? "http" : "https"}://${host}:${port}/v1`,
    port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
