/**
 * Container health check (Dockerfile HEALTHCHECK, compose healthchecks): asks a specgate server for its overall status
 * over the standard gRPC health-checking protocol and exits 0 only when it answers SERVING, 1 otherwise. Speaks TLS
 * when the container's environment makes the gateway serve TLS (SPECGATE_TLS_CERT).
 *
 * Usage: node --import tsx deploy/healthcheck.ts [host:port]   (default 127.0.0.1:50051, the gateway)
 */
import { checkHealth, probeCredentials } from "./health.ts";

const DEADLINE_MS = 2_000;

const address = process.argv[2] ?? "127.0.0.1:50051";
const { serving, status } = await checkHealth(address, DEADLINE_MS, probeCredentials(process.env));
process.stdout.write(`${address}: ${status}\n`);
process.exitCode = serving ? 0 : 1;
