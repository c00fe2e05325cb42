/**
 * specgate on a real three-master Redis Cluster (REDIS_CLUSTER=true, REDIS_URL naming one node): the local stack,
 * with two target replicas and the draft service drafting on verdicts, serves speculative requests whose greedy
 * output equals target-only decoding; its channels are sharded (SSUBSCRIBE), each on the node owning its slot, with
 * everything of one replica on one node; messages published together to channels on several shards each arrive; and
 * a verify job nobody hears pushed goes through the replica's BullMQ queue on the cluster and is verified once that
 * replica starts.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { startLocalStack } from "../../deploy/local-stack.ts";
import { loadServedModel } from "../../gateway/served-model.ts";
import type { TargetStats__Output } from "../../gen/specgate/v1/TargetStats.ts";
import { TargetClient } from "../../proto/load.ts";
import { QUEUE_PREFIX, verifyPushChannel, verifyQueueName } from "../../proto/verify-queue.ts";
import { SpecgateClient } from "../../sdk/index.ts";
import { listReplicas } from "../../services/replica-link/announcements.ts";
import { onMessage, publishAll, subscribe } from "../../services/replica-link/channels.ts";
import {
  closeQueueConnection,
  openRedis,
  queueConnection,
  type RedisTarget,
} from "../../services/replica-link/redis-target.ts";
import { VerifyClient } from "../../services/replica-link/verify-client.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";
import { clusterUnavailable, type RedisCluster, startRedisCluster } from "../support/redis-cluster.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { targetOnlyOutputs } from "../support/target-only.ts";
import { until } from "../support/until.ts";

const MODEL = "stories260k";
const PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben went to the park. They", "One day"];
const MAX_TOKENS = 32;
const unavailable = clusterUnavailable();

/** The hash tag of a channel or key: what picks its slot. */
function tagOf(name: string): string | undefined {
  return name.match(/\{([^}]+)\}/)?.[1];
}

describe("Redis Cluster", { skip: unavailable, timeout: 120_000 }, () => {
  let cluster: RedisCluster;
  let target: RedisTarget;
  let tokenizer: Tokenizer;
  let expected: Map<string, number[]>;

  before(async () => {
    cluster = await startRedisCluster();
    target = { url: cluster.url, cluster: true };
    tokenizer = (await loadServedModel(MODEL)).tokenizer;
    expected = await targetOnlyOutputs(MODEL, tokenizer, PROMPTS, MAX_TOKENS);
  });

  after(async () => {
    await cluster?.stop();
  });

  it("a stack with two replicas serves target-only greedy output over sharded channels", async () => {
    const stack = await startLocalStack({
      gatewayPort: 0,
      httpPort: "off",
      metricsPorts: "free",
      replicas: 2,
      log: () => {},
      redisUrl: cluster.url,
      draftOnVerdict: true,
      env: { ...process.env, REDIS_CLUSTER: "true" },
    });
    const client = new SpecgateClient({ address: stack.gatewayAddress, timeoutMs: 60_000 });
    const nodes = cluster.nodes.map((node) => new Redis(node.url));
    try {
      assert.equal(stack.ownRedis, false);
      const results = await Promise.all(
        PROMPTS.map((prompt) => client.generate({ prompt, max_tokens: MAX_TOKENS, temperature: 0 })),
      );
      results.forEach((result, i) => {
        assert.deepEqual(result.token_ids, expected.get(PROMPTS[i]), `"${PROMPTS[i]}" as target-only decoding`);
        assert.ok((result.stats?.draft_tokens ?? 0) > 0, "the rounds were speculative");
      });

      // No plain channel anywhere; every sharded one on the node that owns its slot.
      const ranges = await nodes[0].cluster("SLOTS");
      const owner = (slot: number) => ranges.find(([first, last]) => first <= slot && slot <= last)?.[2][1];
      const byNode = await Promise.all(
        nodes.map(async (node) => {
          assert.deepEqual(await node.call("PUBSUB", "CHANNELS"), [], `no plain pub/sub on ${node.options.port}`);
          const channels = (await node.call("PUBSUB", "SHARDCHANNELS")) as string[];
          for (const channel of channels) {
            assert.equal(owner(Number(await node.cluster("KEYSLOT", channel))), node.options.port, channel);
          }
          return channels;
        }),
      );
      const all = byNode.flat();
      for (const replica of ["target-0", "target-1"]) {
        assert.ok(all.includes(verifyPushChannel(replica)), `${replica}'s push channel is sharded: ${all}`);
        assert.ok(
          all.some((channel) => channel.startsWith(`${QUEUE_PREFIX}:verify-reply:{${replica}}:`)),
          `the gateway hears ${replica}'s replies on a sharded channel: ${all}`,
        );
        const holders = byNode.filter((channels) => channels.some((channel) => tagOf(channel) === replica));
        assert.equal(holders.length, 1, `everything of ${replica} on one node`);
      }
      assert.ok(
        all.some((channel) => channel.startsWith(`${QUEUE_PREFIX}:draft-verdict:`)),
        `the draft service hears verdicts on a sharded channel: ${all}`,
      );
    } finally {
      client.close();
      for (const node of nodes) node.disconnect();
      await stack.stop();
    }
  });

  it("publishes one turn's messages to channels on every shard, each heard once", async () => {
    const channels = ["a", "b", "c", "d", "e", "f"].map((tag) => `${QUEUE_PREFIX}:it:{${tag}}`);
    const listener = openRedis(target);
    const publisher = openRedis(target);
    try {
      const heard: string[] = [];
      onMessage(listener, (channel) => heard.push(channel.toString()));
      for (const channel of channels) await subscribe(listener, channel);
      const counts = await publishAll(
        publisher,
        channels.map((channel) => ({ channel, message: Buffer.from(channel) })),
      );
      assert.deepEqual(counts, [1, 1, 1, 1, 1, 1]);
      await until(() => heard.length === channels.length, "every message to arrive");
      assert.deepEqual(heard.sort(), channels);
    } finally {
      listener.disconnect();
      publisher.disconnect();
    }
  });

  it("the local stack refuses REDIS_CLUSTER=true without a cluster's URL rather than start its own single node", async () => {
    await assert.rejects(
      startLocalStack({
        gatewayPort: 0,
        metricsPorts: "free",
        log: () => {},
        env: { ...process.env, REDIS_URL: undefined, REDIS_CLUSTER: "true" },
      }),
      /REDIS_CLUSTER=true needs REDIS_URL/,
    );
  });

  it("a job nobody hears pushed waits in the replica's queue on the cluster and is verified once it starts", async () => {
    const replicaId = "queued";
    const client = new VerifyClient(target);
    const connection = queueConnection(target);
    const queue = new Queue(verifyQueueName(replicaId), { connection, prefix: QUEUE_PREFIX });
    let replica: ServiceProcess | undefined;
    try {
      const prompt = PROMPTS[0];
      const verifying = client.verify(
        replicaId,
        {
          sequence_id: "queued-0",
          request_id: "queued-0",
          round: 1,
          history: tokenizer.encode(prompt, { bos: true }),
          draft_tokens: [],
          sampling: { temperature: 0, seed: 1 },
          model: MODEL,
          deadline_unix_ms: Date.now() + 60_000,
        },
        AbortSignal.timeout(60_000),
      );
      await until(async () => (await queue.getWaitingCount()) === 1, "the job to wait in the replica's queue");

      replica = spawnService("services/target/main.ts", ["--replica-id", replicaId, "--model", MODEL], {
        REDIS_URL: cluster.url,
        REDIS_CLUSTER: "true",
      });
      const result = await verifying;
      assert.equal(result.replica_id, replicaId);
      assert.equal(result.next_token, expected.get(prompt)?.[0], "the target's own first token");

      // It announces itself once its queue worker is ready, so possibly after this job.
      const announcer = openRedis(target);
      let address: string | undefined;
      await until(async () => {
        address = (await listReplicas(announcer)).get(replicaId)?.address;
        return address !== undefined;
      }, "the replica's announcement to be listed from the cluster").finally(() => announcer.disconnect());
      assert.ok(address);
      const stub = new TargetClient(address, grpc.credentials.createInsecure());
      const stats = await new Promise<TargetStats__Output>((resolve, reject) =>
        stub.Stats({}, (error: grpc.ServiceError | null, response?: TargetStats__Output) => {
          stub.close();
          if (error || !response) reject(error);
          else resolve(response);
        }),
      );
      assert.equal(Number(stats.jobs_from_queue), 1, "taken from its queue");
    } finally {
      await replica?.stop();
      await client.close();
      await queue.close();
      await closeQueueConnection(connection);
    }
  });
});
