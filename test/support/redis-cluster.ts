/**
 * A real three-master Redis Cluster for tests: three redis-server processes in cluster mode on free loopback ports
 * (their cluster bus ports too), joined by `redis-cli --cluster create` with no replicas, ready once every node
 * reports the cluster ok. Stopped, and its node files removed, by the test that started it.
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { type RedisServer, startRedis } from "../../deploy/redis-server.ts";
import { freePort } from "./ports.ts";
import { until } from "./until.ts";

export interface RedisCluster {
  readonly nodes: readonly RedisServer[];
  /** A URL of one node: what REDIS_URL names with REDIS_CLUSTER=true. */
  readonly url: string;
  stop(): Promise<void>;
}

const run = promisify(execFile);

/** Why a cluster cannot be started here (sharded pub/sub and --cluster-port need Redis 7), or undefined. */
export function clusterUnavailable(): string | undefined {
  try {
    const version = execFileSync("redis-server", ["--version"], { encoding: "utf8" }).match(/v=(\d+)\./)?.[1];
    return Number(version) >= 7 ? undefined : `Redis Cluster tests need redis-server 7 or later (found ${version})`;
  } catch {
    return "redis-server is not installed";
  }
}

export async function startRedisCluster(): Promise<RedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), "specgate-cluster-"));
  const nodes: RedisServer[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((node) => node.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < 3; i++) {
      const [port, busPort] = [await freePort(), await freePort()];
      const args = ["--cluster-enabled", "yes", "--cluster-port", String(busPort), "--dir", dir];
      nodes.push(await startRedis({ port, args: [...args, "--cluster-config-file", `nodes-${port}.conf`] }));
    }
    const addresses = nodes.map((node) => `127.0.0.1:${node.port}`);
    await run("redis-cli", ["--cluster", "create", ...addresses, "--cluster-replicas", "0", "--cluster-yes"]);
    const probes = nodes.map((node) => new Redis(node.url, { lazyConnect: true }));
    try {
      await until(async () => {
        const infos = await Promise.all(probes.map((probe) => probe.cluster("INFO") as Promise<string>));
        return infos.every((info) => info.includes("cluster_state:ok"));
      }, "the cluster to be ok on every node");
    } finally {
      for (const probe of probes) probe.disconnect();
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { nodes, url: nodes[0].url, stop };
}
