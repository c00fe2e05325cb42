/**
 * What every specgate gRPC server (gateway, draft, target) does the same way: bind, serve the standard health and
 * reflection services, and drain on shutdown.
 */
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { packageDefinition } from "../../proto/load.ts";

/**
 * Binds `host:port` (port 0: a free one) and resolves with the bound port; TLS when credentials are given, plaintext
 * otherwise.
 */
export function bindServer(
  server: grpc.Server,
  host: string,
  port: number,
  credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, credentials, (error, boundPort) => {
      if (error) reject(error);
      else resolve(boundPort);
    });
  });
}

/**
 * Adds grpc.health.v1.Health (every listed service and the server as a whole start NOT_SERVING; flip them with
 * `setServing` once ready) and server reflection limited to the listed services.
 */
export function addStandardServices(server: grpc.Server, serviceNames: readonly string[]): HealthImplementation {
  const health = new HealthImplementation(
    Object.fromEntries(["", ...serviceNames].map((name) => [name, "NOT_SERVING"])),
  );
  health.addToServer(server);
  new ReflectionService(packageDefinition, { services: [...serviceNames] }).addToServer(server);
  return health;
}

/** Reports the server as a whole and the service it serves SERVING or NOT_SERVING. */
export function setServing(health: HealthImplementation, serviceName: string, serving: boolean): void {
  const status = serving ? "SERVING" : "NOT_SERVING";
  health.setStatus("", status);
  health.setStatus(serviceName, status);
}

/**
 * Waits for `work` (the calls in flight winding down) for at most `graceMs`; past it the caller cancels what remains.
 */
export async function withinGrace(work: Promise<unknown>, graceMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const graceOver = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, graceMs);
  });
  try {
    await Promise.race([work, graceOver]);
  } finally {
    clearTimeout(timer);
  }
}

/** Stops accepting calls, lets in-flight calls finish for up to `graceMs`, then cancels what remains. */
export function drain(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    // Resolved after forcing too: grpc-js may never call tryShutdown back once a protocol error destroyed a session.
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
