/**
 * `npm run bench:target [-- --json] [--model NAME] [--streams 1,2,4,8,16] [--waits 0,5] [--rounds N] [--k K]
 * [--alpha A] [--overhead-rounds N] [--threads N] [--repeats R]`: the target service's queue path and micro-batcher, measured.
 *
 * - Queue overhead at batch 1 (on the small stories260k, where it matters most): round trip of a verify job through
 *   BullMQ to a replica process and back, minus the replica's own verify time; p50/p99 in ms.
 * - Throughput at 1..16 concurrent streams on the cost-scaled target, for each micro-batcher max wait: verify jobs/s
 *   and tokens/s through the queue, and the batch sizes the batcher reached; beside the ceiling, the same rounds run
 *   through the same batched verify (VerifyRound) in this process with no queue, at the same batch size.
 *
 * Drafts come from an oracle: the target's own greedy continuation (computed once on stories260k, whose greedy output
 * the cost-scaled target shares), each draft token replaced by another with probability 1 − alpha, so rounds accept
 * about as many tokens as a good drafter does while the client spends no CPU on drafting. Greedy verification.
 * Progress on stderr; the last line of stdout is one JSON object.
 */
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { Queue, QueueEvents, Worker } from "bullmq";
import { z } from "zod";
import { startRedis } from "../deploy/redis-server.ts";
import type { TargetClient as TargetStub } from "../gen/specgate/v1/Target.ts";
import type { VerifyJob } from "../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../gen/specgate/v1/VerifyResult.ts";
import { TargetClient } from "../proto/load.ts";
import { decodeVerifyJob, encodeVerifyJob } from "../proto/verify-queue.ts";
import { VerifyClient } from "../services/replica-link/verify-client.ts";
import { VerifyJobError } from "../services/replica-link/verify-errors.ts";
import { greedyDecode } from "../services/runtime/greedy.ts";
import { resolveModel } from "../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../services/runtime/tokenizer/load.ts";
import { SequenceCache } from "../services/target/sequence-cache.ts";
import { VerifyRound } from "../services/target/verify-round.ts";
import { spawnService } from "../test/support/service-process.ts";
import { storyPrompts } from "./prompts.ts";
import { quantile, round } from "./stats.ts";

const list = z.string().transform((text) => text.split(",").map(Number));
const argsSchema = z.object({
  json: z.boolean().default(false),
  model: z.string().default("stories260k-x110m"),
  overheadModel: z.string().default("stories260k"),
  streams: list.default([1, 2, 4, 8, 16]),
  waits: list.default([0, 5]),
  rounds: z.coerce.number().int().positive().default(8),
  overheadRounds: z.coerce.number().int().positive().default(200),
  k: z.coerce.number().int().min(0).default(4),
  alpha: z.coerce.number().min(0).max(1).default(0.8),
  threads: z.coerce.number().int().min(0).default(0),
  repeats: z.coerce.number().int().positive().default(3),
});
type Args = z.output<typeof argsSchema>;

function progress(message: string): void {
  process.stderr.write(`[bench:target] ${message}\n`);
}

/** Deterministic draws in [0, 1) (mulberry32), so every configuration sees the same drafts. */
function draws(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * One client stream: prompt `index` of the workload, its oracle continuation, and the rounds it sends. Streams with
 * the same index draft the same tokens whatever their sequence id, so every configuration verifies the same rounds.
 */
class Stream {
  readonly history: number[];
  readonly oracle: readonly number[];
  readonly promptLength: number;
  round = 0;
  readonly #next: () => number;

  constructor(
    readonly sequenceId: string,
    index: number,
    work: Workload,
    readonly args: Args,
  ) {
    this.history = [...work.prompts[index]];
    this.oracle = work.oracles[index];
    this.promptLength = this.history.length;
    this.#next = draws(index + 1);
  }

  job(): VerifyJob {
    const at = this.history.length - this.promptLength;
    const draft = this.oracle
      .slice(at, at + this.args.k)
      .map((token) => (this.#next() < this.args.alpha ? token : (token + 1 + Math.floor(this.#next() * 100)) % 512));
    return {
      sequence_id: this.sequenceId,
      round: ++this.round,
      history: [...this.history],
      draft_tokens: draft,
      sampling: { temperature: 0, seed: 1 },
    };
  }

  commit(job: VerifyJob, result: VerifyResult__Output): number {
    const accepted = (job.draft_tokens ?? []).slice(0, result.accepted);
    this.history.push(...accepted, result.next_token);
    return accepted.length + 1;
  }
}

interface Workload {
  readonly prompts: number[][];
  readonly oracles: number[][];
}

async function workload(args: Args): Promise<Workload> {
  const dir = resolveModel(args.overheadModel).dir;
  const tokenizer = await loadTokenizer(dir);
  const lm = await OnnxCausalLM.load(dir);
  const prompts = storyPrompts(Math.max(...args.streams)).map((text) => tokenizer.encode(text, { bos: true }));
  const length = (Math.max(args.rounds, 4) + 1) * (args.k + 1) + args.k;
  const oracles: number[][] = [];
  for (const prompt of prompts) {
    oracles.push((await greedyDecode(lm, prompt, { maxTokens: length, stopAtEos: false })).tokens);
  }
  await lm.close();
  return { prompts, oracles };
}

interface RunFigures {
  readonly jobs_per_s: number;
  readonly tokens_per_s: number;
  readonly mean_batch_size: number;
  readonly max_batch_size: number;
  readonly latency_ms_p50: number;
}

/** `streams` streams of `rounds` rounds each, every stream sending its next round as soon as the last returns. */
async function runStreams(
  streams: number,
  work: Workload,
  args: Args,
  tag: string,
  verify: (job: VerifyJob) => Promise<VerifyResult__Output>,
): Promise<RunFigures> {
  const clients = Array.from({ length: streams }, (_, i) => new Stream(`${tag}-${i}`, i, work, args));
  const latencies: number[] = [];
  const sizes: number[] = [];
  let tokens = 0;
  // The first round prefills each prompt: not what the batcher is measured on.
  await Promise.all(
    clients.map(async (stream) => {
      const job = stream.job();
      stream.commit(job, await verify(job));
    }),
  );
  const started = performance.now();
  await Promise.all(
    clients.map(async (stream) => {
      for (let r = 0; r < args.rounds; r++) {
        const job = stream.job();
        const sent = performance.now();
        const result = await verify(job);
        latencies.push(performance.now() - sent);
        sizes.push(result.batch_size);
        tokens += stream.commit(job, result);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return {
    jobs_per_s: round((streams * args.rounds) / seconds),
    tokens_per_s: round(tokens / seconds),
    mean_batch_size: round(sizes.reduce((a, b) => a + b, 0) / sizes.length),
    max_batch_size: Math.max(...sizes),
    latency_ms_p50: round(quantile(latencies, 0.5)),
  };
}

/** The ceiling: the same rounds, all streams of a round in one VerifyRound call, no queue. */
async function runInProcess(streams: number, work: Workload, args: Args, verifyRound: VerifyRound, tag: string) {
  const clients = Array.from({ length: streams }, (_, i) => new Stream(`${tag}-${i}`, i, work, args));
  let tokens = 0;
  let started = performance.now();
  for (let r = 0; r <= args.rounds; r++) {
    // Round 0 prefills the prompts, untimed as in runStreams.
    if (r === 1) {
      tokens = 0;
      started = performance.now();
    }
    const jobs = clients.map((c) => c.job());
    const outcomes = await verifyRound.verify(jobs.map((job) => decodeVerifyJob(encodeVerifyJob(job))));
    outcomes.forEach((outcome, i) => {
      if (outcome instanceof VerifyJobError) throw outcome;
      tokens += clients[i].commit(jobs[i], outcome as VerifyResult__Output);
    });
  }
  const seconds = (performance.now() - started) / 1000;
  verifyRound.cache.release(clients.map((c) => c.sequenceId));
  return { jobs_per_s: round((streams * args.rounds) / seconds), tokens_per_s: round(tokens / seconds) };
}

/**
 * The round trip of an empty job through BullMQ alone (Queue.add, a Worker with concurrency > 1 returning at once,
 * the QueueEvents completion), all in this process: the floor under any BullMQ-based verify path on this machine.
 */
export async function bullmqFloor(redisUrl: string, rounds: number): Promise<number> {
  const connection = { url: redisUrl };
  const worker = new Worker("bench-floor", async () => "", { connection, concurrency: 32 });
  const queue = new Queue("bench-floor", { connection });
  const events = new QueueEvents("bench-floor", { connection });
  await Promise.all([worker.waitUntilReady(), events.waitUntilReady()]);
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const jobId = `floor-${i}`;
    const done = new Promise<void>((resolve) => {
      const onCompleted = (args: { jobId: string }) => {
        if (args.jobId !== jobId) return;
        events.off("completed", onCompleted);
        resolve();
      };
      events.on("completed", onCompleted);
    });
    const sent = performance.now();
    await queue.add("floor", {}, { jobId, removeOnComplete: true });
    await done;
    if (i >= 10) times.push(performance.now() - sent);
  }
  await Promise.all([events.close(), queue.close(), worker.close()]);
  return round(quantile(times, 0.5));
}

async function startReplica(id: string, model: string, maxWaitMs: number, redisUrl: string, args: Args) {
  const service = spawnService("services/target/main.ts", [], {
    SPECGATE_REPLICA_ID: id,
    SPECGATE_TARGET_MODEL: model,
    REDIS_URL: redisUrl,
    SPECGATE_MAX_WAIT_MS: String(maxWaitMs),
    SPECGATE_TARGET_INTRA_OP_THREADS: String(args.threads),
    SPECGATE_LOG_LEVEL: "info",
  });
  const serving = await service.waitForLog((line) => line.msg === "target replica serving", 300_000);
  const target: TargetStub = new TargetClient(serving.address as string, grpc.credentials.createInsecure());
  const release = (ids: string[]) =>
    new Promise<void>((resolve, reject) =>
      target.Release({ sequence_ids: ids }, (error) => (error ? reject(error) : resolve())),
    );
  return {
    release,
    async stop() {
      target.close();
      await service.stop("SIGTERM");
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: Object.fromEntries(
      Object.keys(argsSchema.shape).map((key) => [
        key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`),
        { type: key === "json" ? "boolean" : "string" },
      ]),
    ) as Record<string, { type: "boolean" | "string" }>,
  });
  const args = argsSchema.parse(
    Object.fromEntries(Object.entries(values).map(([k, v]) => [k.replace(/-([a-z])/g, (_, c) => c.toUpperCase()), v])),
  );
  const redis = await startRedis();
  const client = new VerifyClient({ url: redis.url });
  try {
    progress("oracle continuations");
    const work = await workload(args);

    progress(`BullMQ floor: empty jobs through a Queue, a Worker and QueueEvents, ${args.overheadRounds} rounds`);
    const floor = await bullmqFloor(redis.url, args.overheadRounds);
    progress(`queue overhead at batch 1 on ${args.overheadModel}, ${args.overheadRounds} rounds`);
    const small = await startReplica("bench-overhead", args.overheadModel, 2, redis.url, args);
    const rtts: number[] = [];
    const overheads: number[] = [];
    const waits: number[] = [];
    let stream = new Stream("overhead-0", 0, work, args);
    for (let r = 0; r < args.overheadRounds; r++) {
      if (stream.history.length - stream.promptLength + args.k >= work.oracles[0].length) {
        await small.release([stream.sequenceId]);
        stream = new Stream(`overhead-${r}`, 0, work, args);
      }
      const job = stream.job();
      const sent = performance.now();
      const result = await client.verify("bench-overhead", job);
      const rtt = performance.now() - sent;
      stream.commit(job, result);
      if (r < 10) continue;
      rtts.push(rtt);
      overheads.push(rtt - result.verify_time_ms);
      waits.push(result.queue_wait_ms);
    }
    await small.stop();
    const overhead = {
      rounds: rtts.length,
      round_trip_ms_p50: round(quantile(rtts, 0.5)),
      overhead_ms_p50: round(quantile(overheads, 0.5)),
      overhead_ms_p99: round(quantile(overheads, 0.99)),
      queue_wait_ms_p50: round(quantile(waits, 0.5)),
      bullmq_floor_round_trip_ms_p50: floor,
    };
    progress(`overhead ${JSON.stringify(overhead)}`);

    progress(`throughput on ${args.model}: loading the replicas and the in-process ceiling`);
    const replicas = await Promise.all(
      args.waits.map((wait) => startReplica(`bench-wait-${wait}`, args.model, wait, redis.url, args)),
    );
    const lm = await OnnxCausalLM.load(resolveModel(args.model).dir, { intraOpThreads: args.threads });
    const ceilingRound = new VerifyRound(new SequenceCache(lm, Number.MAX_SAFE_INTEGER), "in-process");
    const concurrency: Record<string, unknown> = {};
    for (const streams of args.streams) {
      // Repeats interleave the configurations; the fastest run of each counts (the least disturbed by other work).
      let ceiling = { jobs_per_s: 0, tokens_per_s: 0 };
      const best = new Map<number, RunFigures>();
      for (let repeat = 0; repeat < args.repeats; repeat++) {
        const run = await runInProcess(streams, work, args, ceilingRound, `ceiling-${streams}-${repeat}`);
        if (run.tokens_per_s > ceiling.tokens_per_s) ceiling = run;
        for (const [i, wait] of args.waits.entries()) {
          const tag = `s${streams}-w${wait}-${repeat}`;
          const figures = await runStreams(streams, work, args, tag, (job) => client.verify(`bench-wait-${wait}`, job));
          await replicas[i].release(Array.from({ length: streams }, (_, j) => `${tag}-${j}`));
          if (figures.tokens_per_s > (best.get(wait)?.tokens_per_s ?? 0)) best.set(wait, figures);
        }
      }
      const byWait: Record<string, RunFigures & { ratio_to_ceiling: number }> = {};
      for (const [wait, figures] of best) {
        byWait[String(wait)] = { ...figures, ratio_to_ceiling: round(figures.tokens_per_s / ceiling.tokens_per_s) };
      }
      concurrency[String(streams)] = { ceiling, by_max_wait_ms: byWait };
      progress(`${streams} streams: ${JSON.stringify(concurrency[String(streams)])}`);
    }
    await lm.close();
    await Promise.all(replicas.map((r) => r.stop()));

    const report = {
      model: args.model,
      k: args.k,
      alpha: args.alpha,
      rounds_per_stream: args.rounds,
      repeats: args.repeats,
      overhead_model: args.overheadModel,
      overhead,
      concurrency,
    };
    if (!args.json) {
      process.stdout.write(
        `queue overhead at batch 1: p50 ${overhead.overhead_ms_p50} ms, p99 ${overhead.overhead_ms_p99} ms (round trip p50 ${overhead.round_trip_ms_p50} ms; an empty BullMQ job: ${overhead.bullmq_floor_round_trip_ms_p50} ms)\n`,
      );
      for (const [streams, entry] of Object.entries(concurrency)) {
        const { ceiling, by_max_wait_ms } = entry as {
          ceiling: { tokens_per_s: number };
          by_max_wait_ms: Record<string, RunFigures & { ratio_to_ceiling: number }>;
        };
        const parts = Object.entries(by_max_wait_ms).map(
          ([wait, f]) =>
            `wait ${wait} ms: ${f.tokens_per_s} tok/s (${f.ratio_to_ceiling} of ceiling), batch mean ${f.mean_batch_size} max ${f.max_batch_size}, p50 ${f.latency_ms_p50} ms`,
        );
        process.stdout.write(`${streams} streams: ceiling ${ceiling.tokens_per_s} tok/s; ${parts.join("; ")}\n`);
      }
    }
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } finally {
    await client.close();
    await redis.stop();
  }
}

// Run as a script; the distributed benchmark imports bullmqFloor without running this one.
if (process.argv[1] === import.meta.filename) await main();
