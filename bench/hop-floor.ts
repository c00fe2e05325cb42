/**
 * The floor under the distributed path's overhead on this machine, right now: the hops a round cannot avoid, between
 * two processes that have each been idle as long as a target step (the services sleep while the target computes, and
 * waking an idle process, and the CPU it sleeps on, is most of a hop's cost on a virtual machine).
 *
 * - Redis pub/sub round trip: this process → Redis → echo process → Redis → this process: the shape of a verify job's
 *   push and its reply (four wake-ups).
 * - Loopback TCP round trip: this process → echo process → this process: the least a gRPC proposal round trip to the
 *   draft service can cost (two wake-ups).
 *
 * Their sum is the least a round's overhead can be here without fewer hops.
 */
import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";

export interface HopFloor {
  readonly idle_gap_ms: number;
  readonly rounds: number;
  readonly redis_pubsub_round_trip_ms_p50: number;
  readonly tcp_round_trip_ms_p50: number;
  /** Sum of the two medians: the overhead of a round made of these hops and nothing else. */
  readonly floor_ms_p50: number;
}

const ECHO_ENTRY = new URL("./hop-echo.ts", import.meta.url);

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};
const round3 = (value: number) => Math.round(value * 1000) / 1000;

/** Times `rounds` round trips of `trip`, each after `idleMs` of idleness; the first few only warm up. */
async function timeTrips(trip: () => Promise<void>, idleMs: number, rounds: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < rounds + 5; i++) {
    await sleep(idleMs);
    const started = performance.now();
    await trip();
    if (i >= 5) times.push(performance.now() - started);
  }
  return times;
}

export async function hopFloor(redisUrl: string, idleMs: number, rounds: number): Promise<HopFloor> {
  const ping = `specgate-bench:hop-ping:${randomUUID()}`;
  const pong = `specgate-bench:hop-pong:${randomUUID()}`;
  const echo: ChildProcess = fork(ECHO_ENTRY, [redisUrl, ping, pong], { execArgv: ["--import", "tsx"] });
  const subscriber = new Redis(redisUrl);
  const publisher = new Redis(redisUrl);
  let socket: Socket | undefined;
  try {
    const port = await new Promise<number>((resolve, reject) => {
      echo.once("message", (message) => resolve((message as { port: number }).port));
      echo.once("exit", (code) => reject(new Error(`the hop echo process exited (${code}) before it was ready`)));
    });
    await subscriber.subscribe(pong);
    const pubsub = await timeTrips(
      () =>
        new Promise<void>((resolve) => {
          subscriber.once("message", () => resolve());
          void publisher.publish(ping, "x");
        }),
      idleMs,
      rounds,
    );
    const connected = connect(port, "127.0.0.1");
    socket = connected;
    connected.setNoDelay(true);
    await new Promise((resolve) => connected.once("connect", resolve));
    const tcp = await timeTrips(
      () =>
        new Promise<void>((resolve) => {
          connected.once("data", () => resolve());
          connected.write("x");
        }),
      idleMs,
      rounds,
    );
    const pubsubMs = round3(median(pubsub));
    const tcpMs = round3(median(tcp));
    return {
      idle_gap_ms: round3(idleMs),
      rounds,
      redis_pubsub_round_trip_ms_p50: pubsubMs,
      tcp_round_trip_ms_p50: tcpMs,
      floor_ms_p50: round3(pubsubMs + tcpMs),
    };
  } finally {
    socket?.destroy();
    echo.kill();
    await Promise.all([subscriber.quit(), publisher.quit()]);
  }
}
