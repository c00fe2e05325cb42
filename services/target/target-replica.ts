/**
 * One target replica put together: model and caches, the verify round, the micro-batcher, the queue worker, the
 * Target gRPC service and the Redis announcement; and its drain. main.ts runs it as a process, tests and benchmarks
 * may run it in theirs.
 */
import { Queue } from "bullmq";
import type { Logger } from "pino";
import type { TargetStats } from "../../gen/specgate/v1/TargetStats.ts";
import type { VerifyJob__Output } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult } from "../../gen/specgate/v1/VerifyResult.ts";
import { SERVICE_NAMES } from "../../proto/load.ts";
import { QUEUE_PREFIX, REPLICA_HEARTBEAT_MS, verifyQueueName } from "../../proto/verify-queue.ts";
import { Batcher } from "../batching/batcher.ts";
import { lookaheadDrafter } from "../engine/lookahead-drafter.ts";
import { medusaSelfDrafter } from "../engine/medusa-self-drafter.ts";
import { drain as drainServer, setServing } from "../grpc/server.ts";
import { announceReplica } from "../replica-link/announcements.ts";
import { nowUnixMs } from "../replica-link/clock.ts";
import { closeQueueConnection, openRedis, queueConnection } from "../replica-link/redis-target.ts";
import { publisher } from "../replica-link/turn-batch.ts";
import { PUSHES_CONNECTION_NAME, VerifyIntake } from "../replica-link/verify-intake.ts";
import { startVerifyWorker } from "../replica-link/verify-worker.ts";
import { isMedusaLM } from "../runtime/causal-lm.ts";
import { resolveModel } from "../runtime/model-files.ts";
import { OnnxCausalLM } from "../runtime/onnx-causal-lm.ts";
import type { TargetConfig } from "./config.ts";
import { ReplicaStats } from "./replica-stats.ts";
import { SelfDrafts } from "./self-drafts.ts";
import { SequenceCache } from "./sequence-cache.ts";
import { startTargetServer } from "./server.ts";
import { checkAdmission } from "./verify-job.ts";
import { VerifyRound } from "./verify-round.ts";

export interface TargetReplica {
  readonly replicaId: string;
  /** host:port of the Target gRPC service, as announced. */
  readonly address: string;
  readonly model: OnnxCausalLM;
  /** Add batch observers here (metrics, traces). */
  readonly verifyRound: VerifyRound;
  stats(): TargetStats;
  /** Verify jobs waiting for this replica: in its queue (as of the last heartbeat) and in the batcher. */
  waitingJobs(): number;
  /**
   * Clean shutdown: health NOT_SERVING, announcement withdrawn, no new jobs taken, the jobs in hand verified and
   * completed (queued copies of jobs answered from their push removed), then everything closed. Jobs still waiting in
   * the queue are left to the gateways, which re-route a withdrawn replica's rounds.
   */
  drain(): Promise<void>;
}

export async function startTargetReplica(config: TargetConfig, log: Logger): Promise<TargetReplica> {
  const { replicaId } = config;
  const model = await OnnxCausalLM.load(resolveModel(config.model, config.modelsDir).dir, {
    executionProvider: config.executionProvider,
    deviceId: config.deviceId,
    intraOpThreads: config.intraOpThreads,
    threadSpinning: config.threadSpinning,
    maxCacheBytes: config.cacheBytes,
  });
  const modelName = model.info.name;
  const cache = new SequenceCache(model, config.cacheBytes);
  const verifyRound = new VerifyRound(
    cache,
    replicaId,
    modelName,
    new SelfDrafts([lookaheadDrafter(model.info.vocabSize), ...(isMedusaLM(model) ? [medusaSelfDrafter(model)] : [])]),
  );
  const counters = new ReplicaStats();
  verifyRound.observe(() => (report) => {
    counters.record(report);
    log.debug(
      {
        size: report.size,
        jobs: report.jobs.length,
        ms: Number(report.durationMs.toFixed(3)),
        positions: report.positions,
        reprefills: report.reprefills,
        historyNeeded: report.historyNeeded,
        evicted: report.evicted,
      },
      "verified batch",
    );
  });
  const batcher = new Batcher<VerifyJob__Output, VerifyResult>({
    shareTurn: true,
    maxBatchSize: config.maxBatchSize,
    maxWaitMs: config.maxWaitMs,
    key: (job) => job.sequence_id,
    run: (jobs) => verifyRound.verify(jobs),
  });
  const stats = () =>
    counters.snapshot(
      { replicaId, model: modelName, maxBatchSize: config.maxBatchSize, maxWaitMs: config.maxWaitMs },
      cache,
      intake.counters(),
    );

  const grpc = await startTargetServer(
    {
      release(sequenceIds) {
        batcher.forget(sequenceIds);
        return { released: cache.release(sequenceIds), cacheBytes: cache.bytes };
      },
      stats,
    },
    config.host,
    config.port,
  );
  const address = `${config.advertiseHost ?? config.host}:${grpc.port}`;
  // ioredis reconnects by itself; an outage is logged, never thrown.
  const redisError = (error: Error) => log.warn({ err: error }, "redis connection error");
  const redisTarget = { url: config.redisUrl, cluster: config.redisCluster };
  const redis = openRedis(redisTarget, { maxRetriesPerRequest: 2 }).on("error", redisError);
  const replies = publisher(redis);
  const intake = new VerifyIntake({
    verify(job) {
      checkAdmission(job, modelName, nowUnixMs());
      return batcher.submit(job);
    },
    publish: (channel, message) => replies.send({ channel, message }),
    onPublishError: (error) =>
      log.warn(
        { err: error },
        "could not publish a verify reply or draft verdict (the job's standby copy brings it again)",
      ),
    onBadPush: (error) => log.warn({ err: error }, "ignored a pushed message that is not a verify job"),
  });
  const pushes = openRedis(redisTarget, { connectionName: PUSHES_CONNECTION_NAME }).on("error", redisError);
  await intake.listen(pushes, replicaId);
  const worker = startVerifyWorker({
    redis: redisTarget,
    replicaId,
    intake,
    concurrency: 2 * config.maxBatchSize,
  });
  worker.on("error", (error) => log.error({ err: error }, "verify worker error"));
  await worker.waitUntilReady();
  const announcer = await announceReplica(
    redis,
    {
      replica_id: replicaId,
      queue: verifyQueueName(replicaId),
      address,
      model: modelName,
      max_batch_size: config.maxBatchSize,
      started_at_unix_ms: Date.now(),
    },
    (error) => log.warn({ err: error }, "replica heartbeat failed"),
  );
  const queueRedis = queueConnection(redisTarget);
  const queue = new Queue(verifyQueueName(replicaId), { connection: queueRedis, prefix: QUEUE_PREFIX }).on(
    "error",
    redisError,
  );
  let queued = 0;
  const countQueued = setInterval(() => {
    queue.getWaitingCount().then(
      (count) => {
        queued = count;
      },
      (error) => log.debug({ err: error }, "could not count waiting jobs"),
    );
  }, REPLICA_HEARTBEAT_MS);
  countQueued.unref();
  setServing(grpc.health, SERVICE_NAMES.target, true);
  log.info({ replicaId, address, model: modelName, queue: verifyQueueName(replicaId) }, "target replica serving");

  let draining: Promise<void> | undefined;
  return {
    replicaId,
    address,
    model,
    verifyRound,
    stats,
    waitingJobs: () => queued + batcher.waiting,
    drain() {
      draining ??= (async () => {
        setServing(grpc.health, SERVICE_NAMES.target, false);
        await announcer.withdraw().catch((error) => log.warn({ err: error }, "could not withdraw announcement"));
        clearInterval(countQueued);
        await pushes.quit();
        const inHand = batcher.inHand;
        const forced = setTimeout(() => {
          log.warn({ inHand: batcher.inHand }, "drain timeout: closing with jobs in hand");
          void worker.close(true);
        }, config.drainMs);
        await worker.close();
        await batcher.drain();
        clearTimeout(forced);
        // Answered through their replies: their queued copies must not be verified again by whoever takes the queue.
        await Promise.all(intake.answeredButQueued().map((jobId) => queue.remove(jobId).catch(() => 0)));
        await drainServer(grpc.server, 1000);
        intake.close();
        await Promise.all([redis.quit(), queue.close().then(() => closeQueueConnection(queueRedis))]);
        await model.close();
        log.info({ finishedInHand: inHand, stats: stats() }, "target replica drained");
      })();
      return draining;
    },
  };
}
