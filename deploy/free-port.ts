import { randomInt } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";

/** Lowest port picked: clear of the well-known and registered ports most local servers use. */
const LOWEST_PORT = 10_000;
/** Linux's default start of the ephemeral range, when the kernel's setting cannot be read. */
const DEFAULT_EPHEMERAL_START = 32_768;
const ATTEMPTS = 64;

/**
 * Start of the range the kernel takes source ports of outgoing connections from. A port the OS picks for `listen(0)`
 * lies in that range, so between closing the probe and the service binding it, any new connection (a Redis client,
 * a gRPC channel) may take it: picked below that range, only another listener can.
 */
function ephemeralStart(): number {
  try {
    const start = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(start) && start > LOWEST_PORT ? start : DEFAULT_EPHEMERAL_START;
  } catch {
    return DEFAULT_EPHEMERAL_START;
  }
}

/** Binds `port` on 127.0.0.1 (0: the OS picks) and frees it again; resolves with the port, or undefined if taken. */
function probe(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(undefined));
    server.listen(port, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : undefined));
    });
  });
}

/**
 * A TCP port free on 127.0.0.1 right now, for a server another process will bind: chosen at random below the
 * ephemeral range (see ephemeralStart), the OS's pick only if none of the attempts is free.
 */
export async function freePort(): Promise<number> {
  const end = ephemeralStart();
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const port = await probe(randomInt(LOWEST_PORT, end));
    if (port !== undefined) return port;
  }
  const port = await probe(0);
  if (port === undefined) throw new Error("no free TCP port on 127.0.0.1");
  return port;
}
