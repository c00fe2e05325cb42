/**
 * What every specgate gRPC server (gateway, draft, target) does the same way: bind, serve the standard health and
 * reflection services, and drain on shutdown.
 */
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { packageDefinition } from "../../proto/load.ts";

/** Binds `host:port` (port 0: a free one) without TLS and resolves with the bound port. */
export function bindInsecure(server: grpc.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (error, boundPort) => {
      if (error) reject(error);
      else resolve(boundPort);
    });
  });
}

/**
 * Adds grpc.health.v1.Health (every listed service and the server as a whole start NOT_SERVING; flip them with
 * `setStatus` once ready) and server reflection limited to the listed services.
 */
export function addStandardServices(server: grpc.Server, serviceNames: readonly string[]): HealthImplementation {
  const health = new HealthImplementation(
    Object.fromEntries(["", ...serviceNames].map((name) => [name, "NOT_SERVING"])),
  );
  health.addToServer(server);
  new ReflectionService(packageDefinition, { services: [...serviceNames] }).addToServer(server);
  return health;
}

/** Stops accepting calls, lets in-flight calls finish for up to `graceMs`, then cancels what remains. */
export function drain(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => server.forceShutdown(), graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
