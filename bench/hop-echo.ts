/**
 * The far end of bench/hop-floor.ts, a process of its own (`node --import tsx bench/hop-echo.ts <redis-url>
 * <ping-channel> <pong-channel>`). A message on the ping channel, on its gRPC stream or on its loopback TCP port holds
 * a number of ms: it keeps its CPU busy that long (the work a service does between taking a message and answering it)
 * and answers with the ms it held, on the pong channel or the same stream or connection. It reports its ports to its
 * parent once ready.
 */
import { createServer } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { Redis } from "ioredis";
import { HOP_ECHO_SERVICE, type HopEchoPorts } from "./hop-floor.ts";

const [redisUrl, pingChannel, pongChannel] = process.argv.slice(2);

/** Busy for `ms` from `start`; returns how long it was busy. */
function hold(start: number, ms: number): string {
  while (performance.now() - start < ms);
  return String(performance.now() - start);
}

const subscriber = new Redis(redisUrl);
const publisher = new Redis(redisUrl);
subscriber.on("message", (_channel: string, message: string) => {
  void publisher.publish(pongChannel, hold(performance.now(), Number(message)));
});
await subscriber.subscribe(pingChannel);
const server = createServer((socket) => {
  socket.setNoDelay(true);
  socket.on("data", (data) => socket.write(hold(performance.now(), Number(data.toString()))));
});
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const address = server.address();
const grpcServer = new grpc.Server();
grpcServer.addService(HOP_ECHO_SERVICE, {
  Echo: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    call.on("data", (data: Buffer) => call.write(Buffer.from(hold(performance.now(), Number(data.toString())))));
    call.on("error", () => undefined);
  },
});
const grpcPort = await new Promise<number>((resolve, reject) =>
  grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) =>
    error ? reject(error) : resolve(port),
  ),
);
const ports: HopEchoPorts = { tcpPort: typeof address === "object" && address !== null ? address.port : 0, grpcPort };
process.send?.(ports);
// The parent's exit (or its disconnect) ends this process.
process.on("disconnect", () => process.exit(0));
