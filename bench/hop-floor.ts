/**
 * The floor under the distributed path's overhead on this machine, right now: the hops a round cannot avoid, made
 * between two processes that idle and work the way the services do in a round, with nothing else on the way. Waking
 * an idle process (and the CPU it sleeps on) is most of a hop's cost on a virtual machine, so each leg starts cold:
 *
 * - Verify shape, through Redis pub/sub: this process idles as long as a draft takes (the gateway waits for the draft
 *   service), publishes; the echo process takes it, works as long as a target step, publishes the answer back: the
 *   verify job's push and its reply, four wake-ups.
 * - Proposal shape, over a gRPC bidirectional stream (what the gateway's draft link is): this process idles as long as
 *   a target step, writes a message; the echo works as long as a draft, answers: the least the proposal round trip to
 *   the draft service costs. The same trip over a bare loopback TCP connection shows what gRPC adds.
 *
 * Each figure is the round trip minus the echo's work. The verify and the gRPC proposal figures add up to the least a
 * round's overhead can be here with these hops.
 */

import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { Redis } from "ioredis";
import { round, spread } from "./stats.ts";

export interface HopFloor {
  readonly target_step_ms: number;
  readonly draft_ms: number;
  readonly rounds: number;
  /** Push through Redis to a process at rest, and the reply through Redis to a process at rest, p50. */
  readonly verify_hops_ms_p50: number;
  /** A message on a gRPC bidirectional stream to a process at rest and its answer, p50. */
  readonly proposal_hops_ms_p50: number;
  /** The same trip over a bare loopback TCP connection, p50 (no HTTP/2, no gRPC framing). */
  readonly proposal_tcp_hops_ms_p50: number;
  /** Sum of the verify and the gRPC proposal medians: the overhead of a round made of these hops and nothing else. */
  readonly floor_ms_p50: number;
}

const raw = (bytes: Buffer) => bytes;
/** The echo's gRPC service: one bidirectional stream of raw bytes, the shape of the draft service's Session. */
export const HOP_ECHO_SERVICE = {
  Echo: {
    path: "/specgate.bench.HopEcho/Echo",
    requestStream: true,
    responseStream: true,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
} satisfies grpc.ServiceDefinition;

/** What the echo process reports once it listens. */
export interface HopEchoPorts {
  readonly tcpPort: number;
  readonly grpcPort: number;
}

const ECHO_ENTRY = new URL("./hop-echo.ts", import.meta.url);
const WARM_UP = 5;

/**
 * `rounds` trips after `idleMs` each: `send(workMs)` asks the echo to work that long and resolves with the ms it
 * worked; a trip's hops are its round trip minus that work.
 */
async function hopTimes(send: (workMs: number) => Promise<number>, idleMs: number, workMs: number, rounds: number) {
  const times: number[] = [];
  for (let i = 0; i < rounds + WARM_UP; i++) {
    await sleep(idleMs);
    const started = performance.now();
    const worked = await send(workMs);
    if (i >= WARM_UP) times.push(performance.now() - started - worked);
  }
  return spread(times).median;
}

export async function hopFloor(
  redisUrl: string,
  targetStepMs: number,
  draftMs: number,
  rounds: number,
): Promise<HopFloor> {
  const ping = `specgate-bench:hop-ping:${randomUUID()}`;
  const pong = `specgate-bench:hop-pong:${randomUUID()}`;
  const echo: ChildProcess = fork(ECHO_ENTRY, [redisUrl, ping, pong], { execArgv: ["--import", "tsx"] });
  const subscriber = new Redis(redisUrl);
  const publisher = new Redis(redisUrl);
  let socket: Socket | undefined;
  let channel: grpc.Client | undefined;
  let stream: grpc.ClientDuplexStream<Buffer, Buffer> | undefined;
  // An echo process that dies fails the measurement instead of leaving a trip waiting forever.
  const exited = new Promise<never>((_, reject) =>
    echo.once("exit", (code) => reject(new Error(`the hop echo process exited (code ${code})`))),
  );
  exited.catch(() => undefined);
  const trip = <T>(send: () => Promise<T>) => Promise.race([send(), exited]);
  try {
    const ports = await trip(
      () => new Promise<HopEchoPorts>((resolve) => echo.once("message", (message) => resolve(message as HopEchoPorts))),
    );
    await subscriber.subscribe(pong);
    const verifyHops = await hopTimes(
      (workMs) =>
        trip(
          () =>
            new Promise<number>((resolve) => {
              subscriber.once("message", (_channel: string, worked: string) => resolve(Number(worked)));
              void publisher.publish(ping, String(workMs));
            }),
        ),
      draftMs,
      targetStepMs,
      rounds,
    );
    const client = new grpc.Client(`127.0.0.1:${ports.grpcPort}`, grpc.credentials.createInsecure());
    channel = client;
    const echoStream = client.makeBidiStreamRequest<Buffer, Buffer>(HOP_ECHO_SERVICE.Echo.path, raw, raw);
    stream = echoStream;
    echoStream.on("error", () => undefined);
    const proposalHops = await hopTimes(
      (workMs) =>
        trip(
          () =>
            new Promise<number>((resolve) => {
              echoStream.once("data", (worked: Buffer) => resolve(Number(worked.toString())));
              echoStream.write(Buffer.from(String(workMs)));
            }),
        ),
      targetStepMs,
      draftMs,
      rounds,
    );
    const connected = connect(ports.tcpPort, "127.0.0.1");
    socket = connected;
    connected.setNoDelay(true);
    await new Promise((resolve) => connected.once("connect", resolve));
    const proposalTcpHops = await hopTimes(
      (workMs) =>
        trip(
          () =>
            new Promise<number>((resolve) => {
              connected.once("data", (worked) => resolve(Number(worked.toString())));
              connected.write(String(workMs));
            }),
        ),
      targetStepMs,
      draftMs,
      rounds,
    );
    return {
      target_step_ms: round(targetStepMs),
      draft_ms: round(draftMs),
      rounds,
      verify_hops_ms_p50: verifyHops,
      proposal_hops_ms_p50: proposalHops,
      proposal_tcp_hops_ms_p50: proposalTcpHops,
      floor_ms_p50: round(verifyHops + proposalHops),
    };
  } finally {
    socket?.destroy();
    stream?.cancel();
    channel?.close();
    if (echo.exitCode === null && echo.signalCode === null) echo.kill();
    await Promise.all([exited.catch(() => undefined), subscriber.quit(), publisher.quit()]);
  }
}
