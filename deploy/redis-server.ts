/**
 * A private redis-server on a loopback port with no persistence: what the local stack runs when REDIS_URL is unset,
 * and what integration tests run. Stopped by whoever started it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { Socket } from "node:net";
import { freePort } from "./free-port.ts";

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  stop(): Promise<void>;
}

export const REDIS_INSTALL_HINT =
  "redis-server is not installed: install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) " +
  "or point REDIS_URL at a running Redis";

export interface RedisOptions {
  /** Default: a free port. */
  readonly port?: number;
  /** Own process group, so a terminal's Ctrl-C reaches only the parent, which stops redis in order. */
  readonly detached?: boolean;
  /** Receives the server's output (warnings and errors only); default: dropped (a failed start still says why). */
  readonly output?: (text: string) => void;
  /** More redis-server arguments (a cluster node's, for tests). */
  readonly args?: readonly string[];
}

export async function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  const port = options.port ?? (await freePort());
  const child: ChildProcess = spawn(
    "redis-server",
    [
      ...["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"],
      ...(options.args ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"], detached: options.detached ?? false },
  );
  await new Promise<void>((resolve, reject) => {
    child.once("spawn", resolve);
    child.once("error", (error: NodeJS.ErrnoException) =>
      reject(new Error(error.code === "ENOENT" ? REDIS_INSTALL_HINT : `redis-server could not start: ${error}`)),
    );
  });
  const output = options.output ?? (() => {});
  let recent = "";
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding("utf8").on("data", (text: string) => {
      recent = (recent + text).slice(-2000);
      output(text);
    });
  }
  const exited = once(child, "exit");
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    await exited;
  };
  try {
    await Promise.race([
      waitForPing(port),
      exited.then(([code]) => {
        throw new Error(`redis-server exited with code ${code} on port ${port}:\n${recent.trim()}`);
      }),
    ]);
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: `redis://127.0.0.1:${port}`, port, pid: child.pid as number, stop };
}

async function waitForPing(port: number): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      socket.once("error", () => resolve(false));
      socket.connect(port, "127.0.0.1", () => socket.write("PING\r\n"));
      socket.once("data", (data) => {
        socket.destroy();
        resolve(data.toString().startsWith("+PONG"));
      });
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`redis-server did not answer on port ${port}`);
}
