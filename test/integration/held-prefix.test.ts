/**
 * Verify jobs that carry only what the replica's cache lacks (target.proto HeldPrefix), end to end: real Redis, draft
 * and target processes, the gateway in process. Greedy output equals target-only decoding while the jobs after each
 * sequence's first are deltas, and stays equal whenever a replica's cache does not hold the prefix a delta claims:
 * sequences evicted under a small cache budget, a replica killed (its sequences move to the other), a replica
 * restarted under the same id (its cache is empty). Each miss shows up as a history_needed answer, counted by the
 * replica, after which the gateway sends the round again with the full history (and counts the resend in its
 * specgate.verify.history_needed metric).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { MeterProvider } from "@opentelemetry/sdk-metrics";
import { Redis } from "ioredis";
import { pino } from "pino";
import { parseGatewayConfig } from "../../gateway/config.ts";
import { loadServedModel } from "../../gateway/served-model.ts";
import { type RunningGateway, startGateway } from "../../gateway/server.ts";
import type { TargetStats__Output } from "../../gen/specgate/v1/TargetStats.ts";
import type { VerifyJob__Output } from "../../gen/specgate/v1/VerifyJob.ts";
import { TargetClient } from "../../proto/load.ts";
import { decodeReplicaAnnouncement, decodeVerifyPush, QUEUE_PREFIX, replicaKey } from "../../proto/verify-queue.ts";
import { type GenerateInput, SpecgateClient } from "../../sdk/index.ts";
import { METRICS, prometheusName, SpecgateMetrics } from "../../services/telemetry/metrics.ts";
import { sumSamples } from "../../services/telemetry/prometheus-text.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { ScrapeReader } from "../support/scrape-reader.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { targetOnlyOutputs } from "../support/target-only.ts";

const MODEL = "stories260k";
const DRAFTERS = "int4=stories260k-int4";
const PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben went to the park. They", "One day"];
const MAX_TOKENS = 48;
/** stories260k's KV bytes per token. */
const KV_BYTES_PER_TOKEN = 1280;
/**
 * Per replica: room for two whole sequences in one batch (max batch size 2), not for the three each replica holds
 * when six run at once, so idle ones are evicted.
 */
const CACHE_BYTES = 140 * KV_BYTES_PER_TOKEN;

function until(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const giveUpAt = Date.now() + timeoutMs;
  return (async () => {
    while (!(await check().catch(() => false))) {
      if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
}

describe("verify jobs carrying only what the replica's cache lacks", { timeout: 120_000 }, () => {
  let redis: RedisServer;
  let draft: ServiceProcess;
  const targets = new Map<string, ServiceProcess>();
  let gateway: RunningGateway;
  let client: SpecgateClient;
  let expected: Map<string, number[]>;
  /** Every job pushed to a replica, as it went on the wire, with the replica's id. */
  const pushed: { replicaId: string; job: VerifyJob__Output }[] = [];
  let listener: Redis;
  /** For plain commands (a subscribed connection takes none). */
  let commands: Redis;
  /** The gateway's metrics, scraped on demand. */
  const metricsReader = new ScrapeReader();
  const meters = new MeterProvider({ readers: [metricsReader] });

  /** The gateway's count of rounds sent again with the full history, by replica. */
  async function historyResends(replica: string): Promise<number> {
    const name = prometheusName(METRICS.verifyHistoryNeeded);
    return sumSamples(await metricsReader.scrape(), name, { specgate_replica: replica });
  }

  async function startTarget(replicaId: string): Promise<void> {
    const target = spawnService(
      "services/target/main.ts",
      ["--replica-id", replicaId, "--model", MODEL, "--max-batch-size", "2", "--cache-bytes", String(CACHE_BYTES)],
      { REDIS_URL: redis.url },
    );
    targets.set(replicaId, target);
    await target.waitForLog((l) => l.msg === "target replica serving");
  }

  /** Stats of the replica now announced under the id (after a quick restart the router may still hold the old address). */
  async function targetStats(replicaId: string): Promise<TargetStats__Output> {
    const announced = await commands.get(replicaKey(replicaId));
    assert.ok(announced, `replica ${replicaId} is announced`);
    const stub = new TargetClient(decodeReplicaAnnouncement(announced).address, grpc.credentials.createInsecure());
    return new Promise<TargetStats__Output>((resolve, reject) =>
      stub.Stats({}, (error: grpc.ServiceError | null, stats?: TargetStats__Output) => {
        stub.close();
        if (error || !stats) reject(error);
        else resolve(stats);
      }),
    );
  }

  /** Streams the inputs at once; calls `during` once every stream has its first tokens. */
  async function streams(inputs: GenerateInput[], during?: () => Promise<void>): Promise<number[][]> {
    const received = inputs.map(() => 0);
    let acted: Promise<void> | undefined;
    const outputs = await Promise.all(
      inputs.map(async (input, i) => {
        const tokens: number[] = [];
        for await (const event of client.stream(input, { timeoutMs: 60_000 })) {
          if (event.type !== "delta") continue;
          tokens.push(...event.token_ids);
          received[i] = tokens.length;
          if (during && acted === undefined && received.every((n) => n > 0)) acted = during();
        }
        return tokens;
      }),
    );
    await acted;
    return outputs;
  }

  function assertTargetOnly(outputs: number[][], prompts: string[], what: string): void {
    outputs.forEach((tokens, i) => {
      assert.deepEqual(tokens, expected.get(prompts[i]), `${what}: "${prompts[i]}"`);
    });
  }

  before(async () => {
    redis = await startRedis();
    draft = spawnService("services/draft/main.ts", ["--port", "0", "--metrics-port", "0"], {
      SPECGATE_DRAFTERS: DRAFTERS,
    });
    const [listening] = await Promise.all([
      draft.waitForLog((l) => l.msg === "draft service listening"),
      startTarget("r0"),
      startTarget("r1"),
    ]);
    commands = new Redis(redis.url);
    listener = new Redis(redis.url);
    listener.on("pmessageBuffer", (_pattern: Buffer, channel: Buffer, message: Buffer) => {
      pushed.push({ replicaId: channel.toString().replace(/^.*{(.*)}$/, "$1"), job: decodeVerifyPush(message) });
    });
    await listener.psubscribe(`${QUEUE_PREFIX}:verify-push:*`);
    const served = await loadServedModel(MODEL);
    gateway = await startGateway({
      config: parseGatewayConfig({
        port: 0,
        redisUrl: redis.url,
        draftAddress: String(listening.address),
        drafters: DRAFTERS,
        verifyTimeoutMs: 5000,
      }),
      model: served.model,
      tokenizer: served.tokenizer,
      logger: pino({ level: "silent" }),
      metrics: new SpecgateMetrics(meters.getMeter("specgate")),
    });
    await until(async () => gateway.router.replicas.size === 2, "both replicas to be announced");
    client = new SpecgateClient({ address: gateway.address });
    expected = await targetOnlyOutputs(MODEL, served.tokenizer, PROMPTS, MAX_TOKENS);
  });

  after(async () => {
    client?.close();
    await gateway?.stop(1000);
    await Promise.all([listener?.quit(), commands?.quit()]);
    await Promise.all([draft?.stop(), ...[...targets.values()].map((t) => t.stop())]);
    await redis?.stop();
    await meters.shutdown();
  });

  it("greedy output equals target-only with deltas, also for sequences evicted under a small cache", async () => {
    const prompts = [...PROMPTS, PROMPTS[0], PROMPTS[2]];
    pushed.length = 0;
    const outputs = await streams(prompts.map((prompt) => ({ prompt, max_tokens: MAX_TOKENS, k: 2 })));
    assertTargetOnly(outputs, prompts, "six streams on two small caches");
    const deltas = pushed.map((p) => p.job).filter((job) => job.held_prefix !== null);
    assert.ok(deltas.length > pushed.length / 2, `${deltas.length} of ${pushed.length} jobs were deltas`);
    assert.ok(
      deltas.every((job) => job.history.length >= 1 && job.history.length <= 3),
      "a delta carries the tokens after the held prefix only",
    );
    const stats = await Promise.all(["r0", "r1"].map(targetStats));
    const needed = stats.reduce((sum, s) => sum + s.history_needed, 0);
    assert.ok(needed > 0, "evicted sequences were asked for their history");
    const resent = (await historyResends("r0")) + (await historyResends("r1"));
    assert.equal(resent, needed, "the gateway counts each history_needed answer as one resend");
    assert.ok(
      stats.every((s) => s.cache_bytes <= CACHE_BYTES),
      `caches within their budget: ${stats.map((s) => s.cache_bytes)}`,
    );
  });

  it("a replica killed mid-run: its sequences finish on the other, which gets their full history first", async () => {
    pushed.length = 0;
    const outputs = await streams(
      PROMPTS.map((prompt) => ({ prompt, max_tokens: MAX_TOKENS, k: 2 })),
      async () => {
        targets.get("r1")?.child.kill("SIGKILL");
      },
    );
    assertTargetOnly(outputs, PROMPTS, "across r1's death");
    // A sequence re-routed to r0 goes there with its full history at once, not with a claim r0 cannot hold.
    const moved = new Set(pushed.filter((p) => p.replicaId === "r1").map((p) => p.job.sequence_id));
    const firstOnR0 = [...moved].map((id) => pushed.find((p) => p.replicaId === "r0" && p.job.sequence_id === id));
    assert.ok(
      firstOnR0.some((p) => p !== undefined),
      "a sequence moved from r1 to r0",
    );
    for (const p of firstOnR0) if (p) assert.equal(p.job.held_prefix, null, `${p.job.sequence_id} on r0`);
    await until(async () => !gateway.router.replicas.has("r1"), "r1 to be dropped");
    targets.delete("r1");
  });

  it("a replica restarted under the same id: deltas it cannot hold are answered history_needed, output unchanged", async () => {
    const outputs = await streams(
      PROMPTS.slice(0, 2).map((prompt) => ({ prompt, max_tokens: MAX_TOKENS, k: 2 })),
      async () => {
        targets.get("r0")?.child.kill("SIGKILL");
        await startTarget("r0");
      },
    );
    assertTargetOnly(outputs, PROMPTS.slice(0, 2), "across r0's restart");
    const stats = await targetStats("r0");
    assert.ok(stats.history_needed > 0, "the restarted replica asked for the history");
    assert.ok((await historyResends("r0")) >= stats.history_needed, "the gateway counted those resends");
    assert.ok(stats.jobs > 0);
  });
});
