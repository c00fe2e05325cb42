/**
 * Two target replica processes on one redis-server: each serves its own queue and together they share a workload;
 * a replica killed with SIGKILL mid-run is detected through its expiring announcement (watchReplicas), the rounds it
 * held are re-sent to the other replica (the gateway's path, replayed here) and finish with the in-process results.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Redis } from "ioredis";
import type { TargetClient as TargetStub } from "../../gen/specgate/v1/Target.ts";
import type { TargetStats__Output } from "../../gen/specgate/v1/TargetStats.ts";
import type { VerifyJob } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../../gen/specgate/v1/VerifyResult.ts";
import { TargetClient } from "../../proto/load.ts";
import { watchReplicas } from "../../services/replica-link/announcements.ts";
import { VerifyClient } from "../../services/replica-link/verify-client.ts";
import { VerifyJobError } from "../../services/replica-link/verify-errors.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { RandomDrafter } from "../support/random-drafter.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { runScriptedRounds, type ScriptedSequence } from "../support/verify-rounds.ts";

const MODEL = "stories260k";
const PROMPTS = [
  [1, 403, 407, 261],
  [1, 432, 284, 265, 271],
  [1, 400, 300],
];

let redis: RedisServer;
let reference: OnnxCausalLM;
let client: VerifyClient;
let admin: Redis;
const replicas = new Map<string, { process: ServiceProcess; target: TargetStub }>();

async function startReplica(replicaId: string): Promise<void> {
  const process = spawnService("services/target/main.ts", [], {
    SPECGATE_REPLICA_ID: replicaId,
    SPECGATE_TARGET_MODEL: MODEL,
    REDIS_URL: redis.url,
    SPECGATE_TARGET_INTRA_OP_THREADS: "1",
    SPECGATE_LOG_LEVEL: "info",
  });
  const serving = await process.waitForLog((line) => line.msg === "target replica serving");
  replicas.set(replicaId, {
    process,
    target: new TargetClient(serving.address as string, grpc.credentials.createInsecure()),
  });
}

function stats(replicaId: string): Promise<TargetStats__Output> {
  const { target } = replicas.get(replicaId) as { target: TargetStub };
  return new Promise((resolve, reject) =>
    target.Stats({}, { deadline: Date.now() + 10_000 }, (error, response) =>
      error ? reject(error) : resolve(response as TargetStats__Output),
    ),
  );
}

function sequences(prefix: string, count: number): ScriptedSequence[] {
  const drafter = new RandomDrafter(reference.info.vocabSize);
  return Array.from({ length: count }, (_, i) => ({
    sequenceId: `${prefix}-${i}`,
    prompt: PROMPTS[i % PROMPTS.length],
    sampling: { temperature: i % 2 === 0 ? 0 : 0.8, seed: 100 + i },
    drafter,
    k: 3,
  }));
}

before(async () => {
  redis = await startRedis();
  client = new VerifyClient({ url: redis.url });
  admin = new Redis(redis.url);
  [reference] = await Promise.all([
    OnnxCausalLM.load(MODEL, { intraOpThreads: 1 }),
    startReplica("replica-a"),
    startReplica("replica-b"),
  ]);
});

after(async () => {
  for (const { process, target } of replicas.values()) {
    target.close();
    await process.stop("SIGKILL");
  }
  await client?.close();
  await admin?.quit();
  await reference?.close();
  await redis?.stop();
});

describe("two target replicas", () => {
  test("share a workload, each serving its own queue", async () => {
    const before = { a: await stats("replica-a"), b: await stats("replica-b") };
    const workload = sequences("shared", 6);
    // Affinity as the gateway keeps it: a sequence's rounds always go to the same replica.
    const home = (sequenceId: string) => (Number(sequenceId.split("-").at(-1)) % 2 === 0 ? "replica-a" : "replica-b");
    const pairs = await runScriptedRounds(
      reference,
      workload,
      4,
      (jobs) => Promise.all(jobs.map((job) => client.verify(home(job.sequence_id as string), job))),
      MODEL,
    );
    for (const p of pairs) assert.deepEqual(p.distributed, p.inProcess, `${p.sequenceId} round ${p.round}`);
    for (const p of pairs) assert.equal(p.result.replica_id, home(p.sequenceId));
    const after = { a: await stats("replica-a"), b: await stats("replica-b") };
    assert.equal(after.a.jobs - before.a.jobs, 3 * 4);
    assert.equal(after.b.jobs - before.b.jobs, 3 * 4);
    assert.equal(after.a.sequences, 3);
    assert.equal(after.b.sequences, 3);
  });

  test("a replica killed mid-run: its rounds are re-sent to the other and finish correctly", async () => {
    const lost: string[] = [];
    const watch = watchReplicas(admin, {
      lost: (replicaId) => {
        lost.push(replicaId);
        void client.replicaLost(replicaId);
      },
    });
    let home = "replica-a";
    let round = 0;
    // The gateway's failover, reduced: a round failed with UNAVAILABLE goes to another replica, with the same job.
    const verify = async (job: VerifyJob): Promise<VerifyResult__Output> => {
      try {
        return await client.verify(home, job);
      } catch (error) {
        if (!(error instanceof VerifyJobError && error.code === "UNAVAILABLE")) throw error;
        home = "replica-b";
        return client.verify(home, job);
      }
    };
    const pairs = await runScriptedRounds(
      reference,
      sequences("failover", 4),
      6,
      async (jobs) => {
        const results = Promise.all(jobs.map(verify));
        if (++round === 3) replicas.get("replica-a")?.process.child.kill("SIGKILL");
        return results;
      },
      MODEL,
    );
    watch.stop();
    for (const p of pairs) assert.deepEqual(p.distributed, p.inProcess, `${p.sequenceId} round ${p.round}`);
    assert.deepEqual(lost, ["replica-a"]);
    const servedBy = (r: number) => new Set(pairs.filter((p) => p.round === r).map((p) => p.result.replica_id));
    assert.deepEqual([...servedBy(1)], ["replica-a"]);
    assert.deepEqual([...servedBy(6)], ["replica-b"]);
    const moved = pairs.filter((p) => p.result.replica_id === "replica-b");
    assert.ok(moved[0].result.reprefilled, "the first round on the new replica re-prefilled from the history");
  });
});
