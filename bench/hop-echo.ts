/**
 * The far end of bench/hop-floor.ts, a process of its own (`node --import tsx bench/hop-echo.ts <redis-url>
 * <ping-channel> <pong-channel>`): answers every message on the ping channel on the pong channel and echoes every byte
 * on a loopback TCP port, which it reports to its parent once both are ready.
 */
import { createServer } from "node:net";
import { Redis } from "ioredis";

const [redisUrl, pingChannel, pongChannel] = process.argv.slice(2);
const subscriber = new Redis(redisUrl);
const publisher = new Redis(redisUrl);
subscriber.on("messageBuffer", (_channel: Buffer, message: Buffer) => void publisher.publish(pongChannel, message));
await subscriber.subscribe(pingChannel);
const server = createServer((socket) => {
  socket.setNoDelay(true);
  socket.on("data", (data) => socket.write(data));
});
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const address = server.address();
process.send?.({ port: typeof address === "object" && address !== null ? address.port : 0 });
// The parent's exit (or its disconnect) ends this process.
process.on("disconnect", () => process.exit(0));
