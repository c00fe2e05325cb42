/**
 * A target replica as a real process (services/target/main.ts) on a real redis-server with the real stories260K
 * model: rounds verified through its BullMQ queue equal the engine's in-process verification (greedy and sampling),
 * jobs of many users are batched, Release frees caches and the next round re-prefills to the same verdict, the
 * replica announces itself and serves health, and SIGTERM drains (jobs in hand complete, the announcement goes).
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import { checkHealth } from "../../deploy/health.ts";
import type { DraftVerdict__Output } from "../../gen/specgate/v1/DraftVerdict.ts";
import type { TargetClient as TargetStub } from "../../gen/specgate/v1/Target.ts";
import type { TargetStats__Output } from "../../gen/specgate/v1/TargetStats.ts";
import type { VerifyJob } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyReply__Output } from "../../gen/specgate/v1/VerifyReply.ts";
import type { VerifyResult__Output } from "../../gen/specgate/v1/VerifyResult.ts";
import { SERVICE_NAMES, TargetClient } from "../../proto/load.ts";
import {
  decodeDraftVerdict,
  decodeVerifyReply,
  decodeVerifyResult,
  encodeVerifyJob,
  encodeVerifyPush,
  QUEUE_PREFIX,
  replicaKey,
  VERIFY_JOB_NAME,
  verifyPushChannel,
  verifyQueueName,
} from "../../proto/verify-queue.ts";
import { ModelDrafter } from "../../services/engine/model-drafter.ts";
import { listReplicas } from "../../services/replica-link/announcements.ts";
import { REPLIES_CONNECTION_NAME, VerifyClient } from "../../services/replica-link/verify-client.ts";
import { PUSHES_CONNECTION_NAME } from "../../services/replica-link/verify-intake.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { RandomDrafter } from "../support/random-drafter.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { type RoundPair, runScriptedRounds, type ScriptedSequence, WIRE_QUANTISED } from "../support/verify-rounds.ts";

const MODEL = "stories260k";
const REPLICA = "it-target";
const PROMPTS = [
  [1, 403, 407, 261, 378],
  [1, 432, 284, 265],
  [1, 400, 300, 200],
  [1, 280, 305, 320, 271],
];

let redis: RedisServer;
let replica: ServiceProcess;
let reference: OnnxCausalLM;
let draftModel: OnnxCausalLM;
let client: VerifyClient;
let target: TargetStub;
let admin: Redis;

function startReplica(replicaId: string, redisUrl: string): ServiceProcess {
  return spawnService("services/target/main.ts", [], {
    SPECGATE_REPLICA_ID: replicaId,
    SPECGATE_TARGET_MODEL: MODEL,
    REDIS_URL: redisUrl,
    SPECGATE_TARGET_INTRA_OP_THREADS: "1",
    SPECGATE_LOG_LEVEL: "info",
    // Metrics on (a free scrape port), traces off.
    OTEL_SDK_DISABLED: "false",
    SPECGATE_TARGET_METRICS_PORT: "0",
  });
}

function unary<Req, Res>(
  call: (
    request: Req,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: Res) => void,
  ) => unknown,
  request: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    call(request, { deadline: Date.now() + 10_000 }, (error, response) =>
      error ? reject(error) : resolve(response as Res),
    );
  });
}

const stats = () => unary<object, TargetStats__Output>(target.Stats.bind(target), {});

const viaQueue = (jobs: VerifyJob[]) => Promise.all(jobs.map((job) => client.verify(REPLICA, job)));

function assertSameVerdicts(pairs: readonly RoundPair[]): void {
  for (const p of pairs) assert.deepEqual(p.distributed, p.inProcess, `sequence ${p.sequenceId} round ${p.round}`);
}

function sequences(prefix: string, count: number, temperature: number, k = 4): ScriptedSequence[] {
  const int4 = new ModelDrafter(draftModel, "int4", WIRE_QUANTISED);
  const random = new RandomDrafter(reference.info.vocabSize);
  return Array.from({ length: count }, (_, i) => ({
    sequenceId: `${prefix}-${i}`,
    prompt: PROMPTS[i % PROMPTS.length],
    sampling: { temperature, seed: 7 + i, ...(i % 2 === 1 ? { topK: 40, topP: 0.95 } : {}) },
    drafter: i % 2 === 0 ? int4 : random,
    k,
  }));
}

before(async () => {
  redis = await startRedis();
  replica = startReplica(REPLICA, redis.url);
  [reference, draftModel] = await Promise.all([
    OnnxCausalLM.load(MODEL, { intraOpThreads: 1 }),
    OnnxCausalLM.load("stories260k-int4", { intraOpThreads: 1 }),
  ]);
  const serving = await replica.waitForLog((line) => line.msg === "target replica serving");
  target = new TargetClient(serving.address as string, grpc.credentials.createInsecure());
  client = new VerifyClient({ url: redis.url });
  admin = new Redis(redis.url);
});

after(async () => {
  target?.close();
  await client?.close();
  await admin?.quit();
  await replica?.stop("SIGKILL");
  await Promise.all([reference?.close(), draftModel?.close()]);
  await redis?.stop();
});

describe("target replica process", () => {
  test("announces itself and serves health", async () => {
    const replicas = await listReplicas(admin);
    const announcement = replicas.get(REPLICA);
    assert.ok(announcement, "announcement present");
    assert.equal(announcement.queue, verifyQueueName(REPLICA));
    assert.equal(announcement.model, MODEL);
    assert.equal(announcement.max_batch_size, 16);
    const { status } = await checkHealth(announcement.address, 5000, undefined, SERVICE_NAMES.target);
    assert.equal(status, "SERVING");
  });

  test("rounds through the queue equal the in-process engine's, greedy and sampling", async () => {
    const pairs = await runScriptedRounds(
      reference,
      [...sequences("greedy", 2, 0), ...sequences("sampled", 2, 0.9)],
      6,
      viaQueue,
      MODEL,
    );
    assertSameVerdicts(pairs);
    assert.ok(pairs.some((p) => p.result.accepted > 0) && pairs.some((p) => !p.result.bonus));
    assert.ok(pairs.every((p) => p.result.replica_id === REPLICA));
  });

  test("a job's pushed and queued copies are verified once, and its outcome is published on its reply channel (again for a late copy)", async () => {
    const subscriber = new Redis(redis.url);
    const replies: VerifyReply__Output[] = [];
    const verdicts: DraftVerdict__Output[] = [];
    subscriber.on("messageBuffer", (channel: Buffer, message: Buffer) => {
      if (channel.toString() === "it-verdicts") {
        verdicts.push(decodeDraftVerdict(message));
        return;
      }
      replies.push(decodeVerifyReply(message));
      subscriber.emit("reply");
    });
    await subscriber.subscribe("it-replies", "it-verdicts");
    const nextReply = () => once(subscriber, "reply", { signal: AbortSignal.timeout(10_000) });
    const connection = { url: redis.url };
    const queue = new Queue(verifyQueueName(REPLICA), { connection, prefix: QUEUE_PREFIX });
    const events = new QueueEvents(verifyQueueName(REPLICA), { connection, prefix: QUEUE_PREFIX });
    await events.waitUntilReady();
    const job = (id: string, extra: Partial<VerifyJob> = {}): VerifyJob => ({
      sequence_id: id,
      round: 1,
      history: PROMPTS[0],
      draft_tokens: [284, 265],
      sampling: { temperature: 0, seed: 1 },
      model: MODEL,
      job_id: `${id}-job`,
      reply_channel: "it-replies",
      ...extra,
    });
    const enqueue = async (sent: VerifyJob) => {
      const added = await queue.add(VERIFY_JOB_NAME, encodeVerifyJob(sent), { jobId: sent.job_id });
      return decodeVerifyResult(await added.waitUntilFinished(events, 10_000));
    };
    try {
      const jobsBefore = (await stats()).jobs;
      // The push alone is verified and answered; its queued copy then completes with the same result, not re-run, and
      // the reply is published again (the gateway leaves a queued copy in place only when no reply reached it).
      const twin = job("twin");
      const pushed = nextReply();
      await admin.publish(verifyPushChannel(REPLICA), encodeVerifyPush(twin));
      await pushed;
      const repeated = nextReply();
      const completed = await enqueue(twin);
      await repeated;
      assert.deepEqual(replies[0].result, completed);
      assert.deepEqual(replies[1], replies[0]);
      assert.equal(replies[0].job_id, twin.job_id);
      // So is a push of a job already answered (a gateway whose reply subscription was interrupted pushes again).
      const pushedAgain = nextReply();
      await admin.publish(verifyPushChannel(REPLICA), encodeVerifyPush(twin));
      await pushedAgain;
      assert.deepEqual(replies[2], replies[0]);
      assert.equal((await stats()).jobs - jobsBefore, 1, "verified once");
      replies.length = 0;
      // A queued copy is matched by its job id alone: once the push was taken its data is not read again.
      const garbled = job("garbled-twin");
      const garbledPushed = nextReply();
      await admin.publish(verifyPushChannel(REPLICA), encodeVerifyPush(garbled));
      await garbledPushed;
      const copy = await queue.add(
        VERIFY_JOB_NAME,
        { verifyJob: Buffer.from([0x0a, 0xff]).toString("base64") },
        { jobId: garbled.job_id },
      );
      assert.deepEqual(decodeVerifyResult(await copy.waitUntilFinished(events, 10_000)), replies[0].result);
      while (replies.length < 2) await nextReply();
      replies.length = 0;

      // A job that was only queued is answered on its reply channel too.
      const replied = nextReply();
      const alone = await enqueue(job("alone"));
      await replied;
      assert.deepEqual(replies[0].result, alone);

      // A failure is published as its status and detail (and no verdict goes to the draft service).
      const failed = nextReply();
      const otherModel = job("other-model", { model: "no-such-model", draft_verdict_channel: "it-verdicts" });
      await admin.publish(verifyPushChannel(REPLICA), encodeVerifyPush(otherModel));
      await failed;
      assert.equal(replies[1].result, null);
      assert.match(replies[1].failure, /^FAILED_PRECONDITION: .*no-such-model/);
      assert.equal(verdicts.length, 0, "only jobs that name a draft verdict channel and succeed publish a verdict");

      // A job naming the draft service's verdict channel: the round's verdict goes there, ahead of the reply.
      const verdictReplied = nextReply();
      await admin.publish(
        verifyPushChannel(REPLICA),
        encodeVerifyPush(job("drafted", { round: 4, draft_verdict_channel: "it-verdicts" })),
      );
      await verdictReplied;
      const verified = replies[2].result;
      assert.ok(verified);
      assert.deepEqual(verdicts, [
        { sequence_id: "drafted", round: 4, accepted: verified.accepted, next_token: verified.next_token, path: [] },
      ]);

      // A message that is not a job is logged and ignored; the replica keeps serving.
      const ignored = replica.waitForLog((line) => line.msg === "ignored a pushed message that is not a verify job");
      await admin.publish(verifyPushChannel(REPLICA), Buffer.from([0x0a, 0xff]));
      await ignored;
      const after = await enqueue(job("after-bad-push"));
      assert.deepEqual([after.accepted, after.next_token], [alone.accepted, alone.next_token]);
    } finally {
      await Promise.all([events.close(), queue.close(), subscriber.quit()]);
    }
  });

  test("a job goes on the queue only when its push may be lost: never once answered, at once when nobody heard the push, as a standby when no reply came in time; its outcome pushed again after the reply subscription dropped", async () => {
    const patient = new VerifyClient({ url: redis.url }, { standbyMs: 60_000 });
    const prompt = PROMPTS[1];
    const job = (id: string): VerifyJob => ({
      sequence_id: id,
      round: 1,
      history: prompt,
      draft_tokens: [284, 265],
      sampling: { temperature: 0, seed: 1 },
      model: MODEL,
    });
    const connectionIds = async (name: string) =>
      [...((await admin.client("LIST")) as string).matchAll(/^id=(\d+) .* name=(\S*) /gm)]
        .filter((match) => match[2] === name)
        .map((match) => match[1]);
    // Kills the Redis connections of that name, again whenever they are back, until `done` says so (10 s at most).
    const keepDown = async (name: string, done: () => Promise<boolean>) => {
      const until = performance.now() + 10_000;
      for (;;) {
        for (const id of await connectionIds(name)) await admin.client("KILL", "ID", id);
        if (await done()) return;
        assert.ok(performance.now() < until, `still waiting after 10 s with ${name} kept down`);
        await sleep(5);
      }
    };
    const gone = async (name: string) => (await connectionIds(name)).length === 0;
    const subscribed = async (channel: string) => {
      const [, count] = (await admin.pubsub("NUMSUB", channel)) as [string, number];
      return count > 0;
    };
    const verdict = ({ accepted, next_token }: VerifyResult__Output) => ({ accepted, next_token });
    // BullMQ records every add (and removal) in the queue's event stream.
    const queueEvents = () => admin.xlen(`${QUEUE_PREFIX}:${verifyQueueName(REPLICA)}:events`);
    const fromQueue = async (before: TargetStats__Output) => (await stats()).jobs_from_queue > before.jobs_from_queue;
    const deaf = new Redis(redis.url);
    try {
      const answered = verdict(await client.verify(REPLICA, job("unqueued-warm")));
      const start = await stats();
      const eventsBefore = await queueEvents();
      // Answered through the reply: the job never went on the queue, and the replica saw one copy.
      const again = await patient.verify(REPLICA, job("unqueued"));
      assert.deepEqual(verdict(again), answered);
      await sleep(100);
      assert.equal(await queueEvents(), eventsBefore, "nothing was added to the queue");
      const unqueued = await stats();
      assert.equal(unqueued.jobs_from_queue, start.jobs_from_queue);
      assert.equal(unqueued.replies_repeated, start.replies_repeated);

      // The replica's push subscription is down and nobody else listens: the push reached no one, so the job is
      // queued at once (not after the client's minute of standby) and verified from there.
      await keepDown(PUSHES_CONNECTION_NAME, () => gone(PUSHES_CONNECTION_NAME));
      const unheard = patient.verify(REPLICA, job("unheard-push"));
      await keepDown(PUSHES_CONNECTION_NAME, () => fromQueue(start));
      assert.deepEqual(verdict(await unheard), answered);
      assert.equal((await stats()).jobs_from_queue, start.jobs_from_queue + 1);

      // Someone else hears the push but the replica does not (a push lost with its connection): no reply comes, and
      // the job goes on the queue when the standby time (300 ms) runs out.
      const quick = new VerifyClient({ url: redis.url }, { standbyMs: 300 });
      try {
        await quick.verify(REPLICA, job("standby-warm"));
        const before = await stats();
        await deaf.subscribe(verifyPushChannel(REPLICA));
        await keepDown(PUSHES_CONNECTION_NAME, () => gone(PUSHES_CONNECTION_NAME));
        const started = performance.now();
        const missed = quick.verify(REPLICA, job("standby-missed-push"));
        await keepDown(PUSHES_CONNECTION_NAME, () => fromQueue(before));
        assert.deepEqual(verdict(await missed), answered);
        assert.ok(performance.now() - started >= 300, "queued once the standby time ran out");
        assert.equal((await stats()).jobs_from_queue, before.jobs_from_queue + 1);
      } finally {
        await Promise.all([quick.close(), deaf.unsubscribe()]);
      }

      // The client's reply subscription is down while the replica answers the push: once it is back the client pushes
      // the job again and the replica publishes the outcome it remembers, long before the standby (a minute) is due.
      while (!(await subscribed(verifyPushChannel(REPLICA)))) await sleep(10);
      const before = await stats();
      await keepDown(REPLIES_CONNECTION_NAME, () => gone(REPLIES_CONNECTION_NAME));
      const started = performance.now();
      const lost = patient.verify(REPLICA, job("standby-lost-reply"));
      // Down until the replica has verified the job: its reply went nowhere.
      await keepDown(REPLIES_CONNECTION_NAME, async () => (await stats()).jobs > before.jobs);
      assert.deepEqual(verdict(await lost), answered);
      assert.ok(performance.now() - started < 10_000);
      const after = await stats();
      assert.ok(after.replies_repeated > before.replies_repeated, "the outcome was published again");
      assert.equal(after.jobs - before.jobs, 1, "verified once");
      assert.equal(after.jobs_from_queue, before.jobs_from_queue, "verified from its push");
    } finally {
      await Promise.all([patient.close(), deaf.quit()]);
    }
  });

  test("16 sequences' jobs enqueued at once are verified in batches larger than one", async () => {
    const before = await stats();
    const pairs = await runScriptedRounds(reference, sequences("crowd", 16, 0, 2), 3, viaQueue, MODEL);
    assertSameVerdicts(pairs);
    const after = await stats();
    const larger = Object.entries(after.batches_by_size)
      .filter(([size, count]) => Number(size) > 1 && count > (before.batches_by_size[Number(size)] ?? 0))
      .map(([size]) => Number(size));
    assert.ok(larger.length > 0, `batch sizes seen: ${JSON.stringify(after.batches_by_size)}`);
    assert.ok(Math.max(...pairs.map((p) => p.result.batch_size)) > 1);
    assert.equal(after.jobs - before.jobs, 16 * 3);
  });

  test("exports verify batch metrics, jobs waiting and the target KV cache bytes", async () => {
    const endpoint = await replica.waitForLog((line) => line.msg === "metrics endpoint");
    const text = await (await fetch(endpoint.metrics as string)).text();
    const count = (name: string) =>
      Number(
        text
          .split("\n")
          .find((line) => line.startsWith(`${name}{`) && line.includes(`"${REPLICA}"`))
          ?.split(" ")[1],
      );
    const served = await stats();
    assert.equal(count("specgate_verify_batch_size_count"), served.batches);
    assert.equal(count("specgate_verify_queue_wait_count"), served.jobs);
    assert.ok(text.includes("specgate_kv_cache"), "KV cache gauge exported");
    assert.equal(count("specgate_verify_queue_depth"), 0, "no job waiting");
  });

  test("Release frees caches; the next round re-prefills from the history to the same verdict", async () => {
    let round = 0;
    let released = 0;
    const releasing = async (jobs: VerifyJob[]) => {
      if (++round === 3) {
        const ids = jobs.map((j) => j.sequence_id as string);
        const held = (await stats()).sequences;
        const response = await unary<{ sequence_ids: string[] }, { released: number; cache_bytes: number }>(
          target.Release.bind(target),
          { sequence_ids: [...ids, "never-seen"] },
        );
        released = response.released;
        assert.equal((await stats()).sequences, held - ids.length, "their caches are gone");
      }
      return viaQueue(jobs);
    };
    const pairs = await runScriptedRounds(reference, sequences("release", 2, 0.9), 4, releasing, MODEL);
    assertSameVerdicts(pairs);
    assert.equal(released, 2, "unknown ids are ignored");
    assert.deepEqual(
      pairs.map((p) => p.result.reprefilled),
      [false, false, false, false, true, true, false, false],
    );
    const statsAfter = await stats();
    assert.ok(statsAfter.reprefills >= 2);
    await unary(target.Release.bind(target), { sequence_ids: pairs.map((p) => p.sequenceId) });
  });

  test("jobs for another model or past their deadline fail with a clear status", async () => {
    const job: VerifyJob = {
      sequence_id: "odd",
      round: 1,
      history: [1, 403],
      draft_tokens: [],
      sampling: { temperature: 0, seed: 1 },
    };
    await assert.rejects(client.verify(REPLICA, { ...job, model: "stories260k-x110m" }), (error: Error) => {
      assert.match(error.message, /^FAILED_PRECONDITION: .*serves "stories260k"/);
      return true;
    });
    await assert.rejects(
      client.verify(REPLICA, { ...job, deadline_unix_ms: Date.now() - 1 }),
      /VerifyJobError: DEADLINE_EXCEEDED: /,
    );
    await assert.rejects(
      client.verify(REPLICA, { ...job, history: [1, 99999] }),
      /VerifyJobError: INVALID_ARGUMENT: .*outside the vocabulary/,
    );
  });

  test("SIGTERM drains: jobs taken are completed, the rest wait in the queue, the announcement goes", async () => {
    const jobsBefore = (await stats()).jobs;
    const jobs: VerifyJob[] = Array.from({ length: 24 }, (_, i) => ({
      sequence_id: `drain-${i}`,
      round: 1,
      history: PROMPTS[i % PROMPTS.length],
      draft_tokens: [284, 265, 271],
      sampling: { temperature: 0, seed: 1 },
      model: MODEL,
    }));
    const verifying = jobs.map((job) => client.verify(REPLICA, job));
    const settled = Promise.allSettled(verifying);
    // Once one job is back the replica is busy with the others: the signal lands with jobs in hand.
    await Promise.race(verifying);
    const exitCode = await replica.stop("SIGTERM");
    assert.equal(exitCode, 0);
    assert.equal(await admin.exists(replicaKey(REPLICA)), 0, "announcement withdrawn");

    const queue = new Queue(verifyQueueName(REPLICA), { connection: { url: redis.url }, prefix: QUEUE_PREFIX });
    const counts = await queue.getJobCounts("active", "failed", "wait");
    await queue.close();
    assert.equal(counts.active, 0, "no job left half-done");
    assert.equal(counts.failed, 0, "no job failed");
    const lost = await client.replicaLost(REPLICA, "drained");
    const results = await settled;
    const done = results.filter((r) => r.status === "fulfilled").length;
    assert.equal(lost, counts.wait, "the jobs not taken are still waiting for a replica");
    assert.equal(done + lost, jobs.length);
    assert.ok(done >= 1);
    const drained = replica.logs.find((line) => line.msg === "target replica drained") as { stats: { jobs: number } };
    assert.equal(drained.stats.jobs - jobsBefore, done, "every job taken was completed");
  });
});
