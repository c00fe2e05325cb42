/** Waiting for a specgate server to answer SERVING over the standard gRPC health-checking protocol. */
import * as grpc from "@grpc/grpc-js";
import { service } from "grpc-health-check";
import { GATEWAY_SETTINGS } from "../gateway/config.ts";

interface HealthClient extends grpc.Client {
  check(
    request: { service: string },
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: { status: string }) => void,
  ): grpc.ClientUnaryCall;
}

const HealthClient = grpc.makeGenericClientConstructor(service, "Health");

/**
 * Credentials to check the health of a server started with `env`: TLS without verifying its certificate when that
 * environment makes it serve TLS (the probe checks a process it runs beside, it does not authenticate it; the
 * certificate is made out to the public name, not to 127.0.0.1), plaintext otherwise. A server requiring client
 * certificates cannot be probed this way.
 */
export function probeCredentials(env: NodeJS.ProcessEnv): grpc.ChannelCredentials {
  return env[GATEWAY_SETTINGS.tlsCert.env]
    ? grpc.credentials.createSsl(null, null, null, { rejectUnauthorized: false })
    : grpc.credentials.createInsecure();
}
const POLL_MS = 100;

/**
 * One health check of `service` (default "": the whole server); resolves with the status name or the error's text.
 * Plaintext unless `credentials` say otherwise (a gateway serving TLS).
 */
export function checkHealth(
  address: string,
  deadlineMs = 1000,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  service = "",
): Promise<{ serving: boolean; status: string }> {
  const client = new HealthClient(address, credentials) as unknown as HealthClient;
  return new Promise((resolve) => {
    client.check({ service }, { deadline: Date.now() + deadlineMs }, (error, response) => {
      client.close();
      const status = error ? error.details || grpc.status[error.code] : (response?.status ?? "UNKNOWN");
      resolve({ serving: !error && status === "SERVING", status });
    });
  });
}

/**
 * Polls until the server at `address` is SERVING. Rejects after `timeoutMs`, or as soon as `signal` aborts (the
 * process behind the address died: no point waiting).
 */
export async function waitUntilServing(
  address: string,
  timeoutMs: number,
  signal?: AbortSignal,
  credentials?: grpc.ChannelCredentials,
): Promise<void> {
  const giveUp = Date.now() + timeoutMs;
  let last = "no answer";
  while (Date.now() < giveUp) {
    signal?.throwIfAborted();
    const { serving, status } = await checkHealth(
      address,
      Math.min(1000, Math.max(1, giveUp - Date.now())),
      credentials,
    );
    if (serving) return;
    last = status;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error(`${address} was not SERVING after ${Math.round(timeoutMs / 1000)} s (last answer: ${last})`);
}
