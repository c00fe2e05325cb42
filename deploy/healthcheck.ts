/**
 * Container health check (Dockerfile HEALTHCHECK, compose healthchecks): asks a specgate server for its overall status
 * over the standard gRPC health-checking protocol and exits 0 only when it answers SERVING, 1 otherwise.
 *
 * Usage: node --import tsx deploy/healthcheck.ts [host:port]   (default 127.0.0.1:50051, the gateway)
 */
import * as grpc from "@grpc/grpc-js";
import { service } from "grpc-health-check";

const DEADLINE_MS = 2_000;

interface HealthCheckClient extends grpc.Client {
  check(
    request: { service: string },
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: { status: string }) => void,
  ): grpc.ClientUnaryCall;
}

const address = process.argv[2] ?? "127.0.0.1:50051";
const Health = grpc.makeGenericClientConstructor(service, "Health");
const client = new Health(address, grpc.credentials.createInsecure()) as unknown as HealthCheckClient;

client.check({ service: "" }, { deadline: Date.now() + DEADLINE_MS }, (error, response) => {
  client.close();
  const status = error === null ? response?.status : error.details;
  const serving = error === null && status === "SERVING";
  process.stdout.write(`${address}: ${status}\n`);
  process.exitCode = serving ? 0 : 1;
});
