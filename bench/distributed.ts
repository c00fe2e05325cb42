/**
 * Distributed speculative decoding benchmark (`npm run bench -- --mode distributed [--json] [--prompts N]
 * [--max-tokens N] [--repeats R] [--drafters int4,int4-x11m,ngram] [--k K | --adaptive] [--streams 1,2,4,8,16]
 * [--stream-tokens N] [--sweep-drafter NAME|none] [--no-inproc] [--draft-on-verdict] [--tree-width W] [--tree-nodes N]
 * [--tree-adaptive]`).
 *
 * Starts the whole stack on the cost-scaled pair (redis-server, draft service, one target replica, gateway as real
 * processes, deploy/local-stack.ts) and stops it at the end. Through the gateway, with the SDK's streaming
 * call, on the same prompts:
 * - Per drafter: α, mean accepted per round, c, the measured speedup S over target-only decoding through the same
 *   stack (drafter "none": K = 0), the ideal S* from the run's own service-reported compute times (the in-process
 *   benchmark's formula), efficiency S/S*, and identical_output against in-process target-only greedy tokens; beside
 *   them the in-process benchmark's figures, measured in this run by its own code. Beside each drafter, `<drafter>/tree`:
 *   the same drafter drafting token trees (--tree-width children per node, --tree-nodes nodes, K deep), with the same
 *   fields plus nodes_per_round; for every entry, the ideal speedup projected for a verify whose cost does not grow
 *   with the positions it scores (the batch-1 GPU case), labelled as a projection.
 * - Sampling mode (first drafter, temperature 0.8, top-p 0.95): bytes of draft distributions on the wire per round
 *   and per draft token, beside a dense float32 q; greedy rounds send none; and the bytes of its trees per round.
 * - Per-round overhead of the distributed path: round wall time at the gateway minus the draft compute and the target
 *   compute the services reported for that round (SpeculationStats.round_timings), p50/p99, with where it goes, and
 *   beside it the floor of the hops a round makes on this machine (bench/hop-floor.ts).
 * - Aggregate tokens/s at 1..16 concurrent streams of different tenants, beside the target's own batched-forward
 *   throughput at the same batch sizes measured in this process between the runs (bench/runtime.ts batchedDecode).
 *
 * Decode time excludes each request's first round (it fills the caches with the prompt: the in-process benchmark
 * leaves its prefill out too): it runs from the first streamed tokens to the end, at the client. Repeats interleave
 * the configurations prompt by prompt; per (prompt, configuration) the fastest run counts, the least disturbed by
 * other work on a shared machine, and per-repeat figures give min/median.
 */
import { availableParallelism, loadavg } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { z } from "zod";
import { type LocalStack, startLocalStack } from "../deploy/local-stack.ts";
import type { RoundTiming__Output } from "../gen/specgate/v1/RoundTiming.ts";
import type { SpeculationStats__Output } from "../gen/specgate/v1/SpeculationStats.ts";
import { type GenerateInput, SpecgateClient } from "../sdk/index.ts";
import { SELF_DRAFTERS } from "../services/config/drafter-list.ts";
import { generate } from "../services/engine/generate.ts";
import { DEFAULT_LOOKAHEAD, type LookaheadConfig } from "../services/engine/lookahead.ts";
import { resolveModel } from "../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../services/runtime/tokenizer/load.ts";
import type { BenchReport } from "./cli.ts";
import { hopFloor } from "./hop-floor.ts";
import { UsageMeter } from "./process-usage.ts";
import { Progress } from "./progress.ts";
import { storyPrompts } from "./prompts.ts";
import { batchedDecode, machineInfo } from "./runtime.ts";
import {
  DRAFTER_MODELS,
  FLAT_VERIFY_DEFINITION,
  flatVerifyProjection,
  idealSpeedup,
  run as runInProcess,
} from "./speculative.ts";
import { mean, quantile, round, spread, sum } from "./stats.ts";
import { bullmqFloor } from "./target-batching.ts";

const TARGET = "stories260k-x110m";
/** Pause before measuring the ceiling: the stack releases the last run's sequences in the meantime. */
const SETTLE_MS = 300;
/** Sampling settings of the run that measures the bytes of draft distributions on the wire. */
const SAMPLING = { temperature: 0.8, top_p: 0.95 } as const;
/** Drafter name of target-only decoding through the gateway (K = 0). */
const PLAIN = "none";
/** Configuration name of a drafter's tree variant: `<drafter>/tree`. */
const TREE_SUFFIX = "/tree";
const treeVariant = (drafter: string) => `${drafter}${TREE_SUFFIX}`;
/** Lookahead decoding: the replicas draft its rounds (tries of candidates, no tree shape of their own). */
const LOOKAHEAD = "lookahead";
/** A drafter's configurations: itself and its tree variant (Lookahead's rounds are tries already). */
const variants = (drafter: string) => (drafter === LOOKAHEAD ? [drafter] : [drafter, treeVariant(drafter)]);
/** The stack's target: with Medusa among the drafters, the build whose forwards also yield the heads' outputs. */
const stackTarget = (args: Args) => (args.drafters.includes("medusa") ? `${TARGET}-medusa` : TARGET);
const lookaheadArg = ({ window, ngram, candidates }: LookaheadConfig) => `${window},${ngram},${candidates}`;
/** A drafter's entry in SPECGATE_DRAFTERS. */
const drafterSpec = (name: string) =>
  (SELF_DRAFTERS as readonly string[]).includes(name) ? name : `${name}=${DRAFTER_MODELS[name] ?? "ngram"}`;

const list = (text: string) => text.split(",").filter((item) => item.length > 0);
const argsSchema = z.object({
  prompts: z.coerce.number().int().positive().default(4),
  "max-tokens": z.coerce.number().int().positive().default(64),
  repeats: z.coerce.number().int().positive().default(2),
  drafters: z.string().default("int4,int4-x11m,ngram").transform(list),
  k: z.coerce.number().int().positive().default(4),
  /** Adaptive K (bounded by --k-max) instead of fixed K, for the per-drafter figures. */
  adaptive: z.boolean().default(false),
  "k-max": z.coerce.number().int().positive().default(12),
  streams: z
    .string()
    .default("1,2,4,8,16")
    .transform((text) => list(text).map(Number)),
  /** Tokens per stream in the concurrency sweep. */
  "stream-tokens": z.coerce.number().int().positive().default(64),
  /** Drafter of the speculative concurrency sweep beside the plain one; "none": plain only. */
  "sweep-drafter": z.string().default("int4"),
  /** Leave out the in-process figures (they take about as long as the distributed ones). */
  "no-inproc": z.boolean().default(false),
  /** The draft service drafts each round on the replica's verdict (SPECGATE_DRAFT_ON_VERDICT). */
  "draft-on-verdict": z.boolean().default(false),
  /** Shape of the `<drafter>/tree` variants: children per node and nodes in all (K deep). */
  "tree-width": z.coerce.number().int().positive().default(2),
  "tree-nodes": z.coerce.number().int().positive().default(8),
  /** The tree variants let the gateway pick, each round, the chain or a tree within the shape (the tree policy). */
  "tree-adaptive": z.boolean().default(false),
});
type Args = z.output<typeof argsSchema>;

function parseOptions(argv: readonly string[]): Args {
  const booleans = new Set(["adaptive", "no-inproc", "draft-on-verdict", "tree-adaptive"]);
  const { values } = parseArgs({
    args: [...argv],
    options: Object.fromEntries(
      Object.keys(argsSchema.shape).map((name) => [name, { type: booleans.has(name) ? "boolean" : "string" }]),
    ) as Record<string, { type: "boolean" | "string" }>,
  });
  const parsed = argsSchema.safeParse(values);
  if (!parsed.success) throw new TypeError(z.prettifyError(parsed.error));
  for (const name of parsed.data.drafters) {
    if (!(name in DRAFTER_MODELS) && name !== LOOKAHEAD)
      throw new RangeError(`unknown drafter ${name}; known: ${Object.keys(DRAFTER_MODELS)}`);
  }
  const sweepDrafter = parsed.data["sweep-drafter"];
  if (sweepDrafter !== PLAIN && !parsed.data.drafters.includes(sweepDrafter)) {
    throw new RangeError(`--sweep-drafter ${sweepDrafter} is not among --drafters ${parsed.data.drafters}`);
  }
  return parsed.data;
}

function progress(message: string): void {
  process.stderr.write(`[bench:distributed] ${message}\n`);
}

/** One streamed request as the client saw it. */
interface StreamRun {
  readonly tokens: number[];
  /** Tokens of the first delta (the first round, which also filled the caches). */
  readonly firstTokens: number;
  readonly sentAt: number;
  readonly firstAt: number;
  readonly endAt: number;
  /** Arrival time and token count of every delta. */
  readonly deltas: { at: number; tokens: number }[];
  readonly stats: SpeculationStats__Output;
}

async function streamOnce(client: SpecgateClient, input: GenerateInput): Promise<StreamRun> {
  const tokens: number[] = [];
  const deltas: { at: number; tokens: number }[] = [];
  const sentAt = performance.now();
  for await (const event of client.stream(input, { timeoutMs: 300_000 })) {
    if (event.type === "delta") {
      deltas.push({ at: performance.now(), tokens: event.token_ids.length });
      tokens.push(...event.token_ids);
    } else if (event.stats) {
      const endAt = performance.now();
      return {
        tokens,
        firstTokens: deltas[0]?.tokens ?? 0,
        sentAt,
        firstAt: deltas[0]?.at ?? endAt,
        endAt,
        deltas,
        stats: event.stats,
      };
    }
  }
  throw new Error("stream ended without its end message");
}

/** Decode phase of a run: everything after the first round. */
const decodeMs = (run: StreamRun) => run.endAt - run.firstAt;
const decodeTokens = (run: StreamRun) => run.tokens.length - run.firstTokens;
const decodeRounds = (run: StreamRun) => run.stats.round_timings.slice(1);

/** Overhead of the distributed path in one round: what neither model's compute explains. */
const overheadMs = (t: RoundTiming__Output) => t.round_ms - t.draft_compute_ms - t.verify_compute_ms;

function distribution(values: readonly number[]) {
  return {
    p50: round(quantile(values, 0.5)),
    p99: round(quantile(values, 0.99)),
    mean: round(sum(values) / values.length),
  };
}

/** Where a round's overhead goes, over many rounds: each part's distribution. */
function overheadBreakdown(timings: readonly RoundTiming__Output[]) {
  const drafted = timings.filter((t) => t.draft_wait_ms > 0);
  return {
    rounds: timings.length,
    /** Share of the rounds with a draft whose proposal was drafted on the previous round's verdict. */
    drafted_on_verdict: round(drafted.filter((t) => t.drafted_on_verdict).length / Math.max(1, drafted.length)),
    overhead_ms: distribution(timings.map(overheadMs)),
    /**
     * Gateway ↔ draft service: the wait for the proposal minus the draft's own compute (rounds with a draft); below
     * zero when the draft, started on the verdict, was under way before the gateway began the round.
     */
    draft_transport_ms: distribution(drafted.map((t) => t.draft_wait_ms - t.draft_compute_ms)),
    /** Enqueue → a batch takes the job (the push through Redis to the replica, micro-batcher wait). */
    queue_wait_ms: distribution(timings.map((t) => t.queue_wait_ms)),
    /** Batch done → result at the gateway (the reply through Redis, decoding). */
    result_return_ms: distribution(timings.map((t) => t.verify_wait_ms - t.queue_wait_ms - t.verify_compute_ms)),
    /** The gateway's own work in the round (routing, commit, stop checks, streaming the tokens). */
    gateway_ms: distribution(timings.map((t) => t.round_ms - t.draft_wait_ms - t.verify_wait_ms)),
    /** Where the mean round's time goes, compute and each hop: over every round, so the parts sum to the mean round. */
    round_parts_mean_ms: {
      draft_compute: round(mean(timings.map((t) => t.draft_compute_ms))),
      draft_transport: round(mean(timings.map((t) => t.draft_wait_ms - t.draft_compute_ms))),
      queue_wait: round(mean(timings.map((t) => t.queue_wait_ms))),
      verify_compute: round(mean(timings.map((t) => t.verify_compute_ms))),
      result_return: round(mean(timings.map((t) => t.verify_wait_ms - t.queue_wait_ms - t.verify_compute_ms))),
      gateway: round(mean(timings.map((t) => t.round_ms - t.draft_wait_ms - t.verify_wait_ms))),
    },
  };
}

/** Medians of a round's parts under concurrency: queue waits there include waiting for batch-mates. */
function roundParts(timings: readonly RoundTiming__Output[]) {
  const p50 = (part: (t: RoundTiming__Output) => number) => round(quantile(timings.map(part), 0.5));
  return {
    round_ms: p50((t) => t.round_ms),
    draft_wait_ms: p50((t) => t.draft_wait_ms),
    queue_wait_ms: p50((t) => t.queue_wait_ms),
    verify_compute_ms: p50((t) => t.verify_compute_ms),
    result_return_ms: p50((t) => t.verify_wait_ms - t.queue_wait_ms - t.verify_compute_ms),
  };
}

/**
 * Round trip of a Redis PING on the stack's redis-server: the floor of one hop on this machine right now (the verify
 * path makes two: the push and the reply).
 */
async function redisPingMs(url: string, count: number) {
  const redis = new Redis(url);
  try {
    const times: number[] = [];
    for (let i = 0; i < count; i++) {
      const sent = performance.now();
      await redis.ping();
      times.push(performance.now() - sent);
    }
    return distribution(times.slice(Math.min(10, count - 1)));
  } finally {
    await redis.quit();
  }
}

type Runs = StreamRun[][];

/** Per prompt, the fastest run (least disturbed). */
function fastestRuns(runs: Runs): StreamRun[] {
  return runs.map((repeats) => repeats.reduce((a, b) => (decodeMs(b) < decodeMs(a) ? b : a)));
}

function tokensPerS(runs: readonly StreamRun[]): number {
  return (sum(runs.map(decodeTokens)) * 1000) / sum(runs.map(decodeMs));
}

/** The target's step cost as the replica reports it: mean compute of plain decoding rounds after the first. */
function targetStepMs(plain: readonly StreamRun[]): number {
  const steps = plain.flatMap(decodeRounds).map((t) => t.verify_compute_ms);
  return sum(steps) / steps.length;
}

const sameTokens = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * A drafter's figures against target-only decoding (K = 0) through the same stack, on the fastest run of each prompt.
 *
 * S* is the in-process benchmark's formula over this run's measurements: the speculative rounds' model time (draft and
 * target compute as the services report them) against target-only decoding at its measured cost per token through
 * this stack. S/S* is then the share of the speculative decode's wall time that the models computed: what gRPC, the
 * queue and scheduling leave of the algorithm's limit (in process the same ratio, with next to no transport). The
 * `_compute` pair prices target-only decoding at the replica's compute per step instead (no transport at all, as the
 * in-process S* does); its ratio is the same efficiency.
 */
function drafterFigures(runs: Runs, plainRuns: Runs, reference: readonly number[][], repeats: number) {
  const spec = fastestRuns(runs);
  const plain = fastestRuns(plainRuns);
  const stepMs = targetStepMs(plain);
  const plainMsPerToken = 1000 / tokensPerS(plain);
  const rounds = spec.flatMap(decodeRounds);
  const verifyMs = sum(rounds.map((t) => t.verify_compute_ms));
  const draftMs = sum(rounds.map((t) => t.draft_compute_ms));
  const tokens = sum(spec.map(decodeTokens));
  const speedup = tokensPerS(spec) / tokensPerS(plain);
  const ideal = idealSpeedup(tokens, plainMsPerToken, verifyMs, draftMs);
  const stats = spec.map((r) => r.stats);
  const draftTokens = sum(stats.map((s) => s.draft_tokens));
  const accepted = sum(stats.map((s) => s.accepted_tokens));
  const allRounds = sum(stats.map((s) => s.rounds));
  const perRepeat = Array.from({ length: repeats }, (_, r) => {
    const at = (all: Runs) => all.map((repeatsOfPrompt) => repeatsOfPrompt[r]);
    return tokensPerS(at(runs)) / tokensPerS(at(plainRuns));
  });
  const draftComputeMs = sum(stats.flatMap((s) => s.round_timings.map((t) => t.draft_compute_ms)));
  return {
    alpha: round(draftTokens === 0 ? 0 : accepted / draftTokens),
    mean_accepted_per_round: round(accepted / allRounds),
    tokens_per_round: round(sum(stats.map((s) => s.generated_tokens)) / allRounds),
    c: round(draftTokens === 0 ? 0 : draftComputeMs / draftTokens / stepMs, 4),
    speedup: round(speedup),
    speedup_per_repeat: spread(perRepeat),
    ideal_speedup: round(ideal),
    efficiency: round(speedup / ideal),
    speedup_vs_compute: round((tokensPerS(spec) * stepMs) / 1000),
    ideal_speedup_compute: round(idealSpeedup(tokens, stepMs, verifyMs, draftMs)),
    identical_output: runs.every((repeatsOfPrompt, i) =>
      repeatsOfPrompt.every((run) => sameTokens(run.tokens, reference[i])),
    ),
    tokens_per_s: round(tokensPerS(spec), 1),
    mean_k: round(draftTokens / Math.max(1, allRounds), 2),
    /** Draft tokens (tree nodes) the target scored per round: K for a chain that got its full draft. */
    nodes_per_round: round(draftTokens / Math.max(1, allRounds), 2),
    projected_speedup_flat_verify: round(flatVerifyProjection(tokens, rounds.length, stepMs, draftMs)),
    overhead: overheadBreakdown(runs.flat().flatMap(decodeRounds)),
  };
}

interface SweepFigures {
  tokens_per_s: number;
  tokens_per_s_median: number;
  ceiling_tokens_per_s: number;
  ceiling_tokens_per_s_median: number;
  ceiling_best_step_tokens_per_s: number;
  ratio: number;
  mean_batch_size: number;
  target_busy_share: number;
  target_compute_tokens_per_s: number;
  round_p50: ReturnType<typeof roundParts>;
}

/**
 * Tokens/s of `n` concurrent streams, in the window where every stream is past its first round and none has ended
 * (no prefill, no stragglers: the steady state the ceiling measures); the whole run when that window is empty.
 */
async function concurrentTokensPerS(
  client: SpecgateClient,
  prompts: readonly number[][],
  n: number,
  tokens: number,
  drafter: string,
  k: number,
  tag: string,
) {
  const runs = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      streamOnce(client, {
        prompt: prompts[i % prompts.length],
        max_tokens: tokens,
        drafter,
        k: drafter === PLAIN ? 0 : k,
        tenant_id: `tenant-${i}`,
        user_id: `user-${i}`,
        request_id: `${tag}-${i}`,
      }),
    ),
  );
  const from = Math.max(...runs.map((r) => r.firstAt));
  const to = Math.min(...runs.map((r) => r.endAt));
  const windowed = to - from > 0;
  const start = windowed ? from : Math.min(...runs.map((r) => r.sentAt));
  const end = windowed ? to : Math.max(...runs.map((r) => r.endAt));
  const counted = sum(runs.flatMap((r) => r.deltas.filter((d) => d.at > start && d.at <= end).map((d) => d.tokens)));
  const rounds = runs.flatMap(decodeRounds);
  // Each batched forward is reported to every round it verified: weighted by 1 / batch size, each counts once.
  const busyMs = sum(rounds.map((t) => t.verify_compute_ms / t.batch_size));
  const decodeSpanMs = Math.max(...runs.map((r) => r.endAt)) - Math.min(...runs.map((r) => r.firstAt));
  return {
    tokensPerS: (counted * 1000) / (end - start),
    meanBatch: sum(rounds.map((t) => t.batch_size)) / rounds.length,
    /** Share of the decode span in which the target was running a batch (the rest it waited for jobs). */
    busyShare: busyMs / decodeSpanMs,
    /** Tokens per second of the target's batch time: its batched forwards and acceptance as the service runs them. */
    computeTokensPerS: (sum(runs.map(decodeTokens)) * 1000) / busyMs,
    rounds,
  };
}

/**
 * Context of the longest sequence in the ceiling's batch (the others are 2, 4, ... tokens shorter) such that their
 * mean context is the streams' mean context halfway through their tokens: attention and KV copies grow with context.
 */
function ceilingContext(prompts: readonly number[][], streams: number, streamTokens: number): number {
  const promptMean = sum(prompts.slice(0, streams).map((p) => p.length)) / streams;
  return Math.max(2 * streams - 1, Math.round(promptMean + streamTokens / 2) + streams - 1);
}

const PROCESS_USAGE_DEFINITION =
  "per round of the speculative single-stream runs (every drafter): each process's time on a CPU and time runnable but waiting for one (all threads, /proc/<pid>/task/*/schedstat); wait_ms_per_wakeup: that wait over the times a thread was put on a CPU. client: this process. A wait is time a message had arrived (or work was ready) while its process was off the cores: other processes held them, or a virtual CPU was still waking up";

function processUsageFigures(usage: UsageMeter, rounds: number) {
  const totals = usage.totals();
  if (totals.size === 0 || rounds === 0) return null;
  return {
    definition: PROCESS_USAGE_DEFINITION,
    rounds,
    cpus: availableParallelism(),
    by_process: Object.fromEntries(
      [...totals].map(([name, total]) => [
        name,
        {
          cpu_ms_per_round: round(total.cpuMs / rounds),
          wait_ms_per_round: round(total.waitMs / rounds),
          wait_ms_per_wakeup: round(total.waitMs / Math.max(1, total.slices)),
        },
      ]),
    ),
  };
}

function processUsageLine(figures: ReturnType<typeof processUsageFigures>): string {
  if (figures === null) return "per round, CPU and waits for a CPU: not available here (no /proc schedstats)";
  const parts = Object.entries(figures.by_process).map(
    ([name, f]) => `${name} ${f.cpu_ms_per_round}/${f.wait_ms_per_round} (${f.wait_ms_per_wakeup} per wake-up)`,
  );
  return `per speculative round on ${figures.cpus} CPUs, ms on a CPU / ms waiting for one: ${parts.join(", ")}`;
}

export async function run(argv: readonly string[]): Promise<BenchReport> {
  const args = parseOptions(argv);
  const tokenizer = await loadTokenizer(resolveModel(TARGET).dir);
  const prompts = storyPrompts(Math.max(args.prompts, ...args.streams)).map((text) =>
    tokenizer.encode(text, { bos: true }),
  );

  progress(`loading ${TARGET} in this process (reference tokens, batched-forward ceiling)`);
  const lm = await OnnxCausalLM.load(TARGET);
  try {
    return await measure(args, lm, prompts);
  } finally {
    await lm.close();
  }
}

async function measure(args: Args, lm: OnnxCausalLM, prompts: readonly number[][]): Promise<BenchReport> {
  const loadAtStart = round(loadavg()[0], 2);
  const measured = prompts.slice(0, args.prompts);
  const reference: number[][] = [];
  for (const prompt of measured) {
    reference.push((await generate(lm, prompt, { maxNewTokens: args["max-tokens"] })).tokens);
  }
  const inproc = args["no-inproc"] ? undefined : await inProcessFigures(args);

  const stack = await startStack(args);
  const client = new SpecgateClient({ address: stack.gatewayAddress, retry: { maxAttempts: 1 } });
  // Interrupted (Ctrl-C): the stack's processes live in their own process groups, so stop them before leaving.
  const interrupted = (signal: NodeJS.Signals) => {
    progress(`${signal}: stopping the stack`);
    void stack.stop().finally(() => process.exit(130));
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    const redisPing = await redisPingMs(stack.redisUrl, 200);
    const bullmqFloorMs = await bullmqFloor(stack.redisUrl, 200);
    const single = await singleStreamRuns(args, client, stack, measured);
    const sampled = await samplingRuns(args, client, measured);
    const drafted = (single.runs.get(args.drafters[0]) as Runs).flat().flatMap(decodeRounds);
    const floor = await hopFloor(
      stack.redisUrl,
      targetStepMs((single.runs.get(PLAIN) as Runs).flat()),
      sum(drafted.map((t) => t.draft_compute_ms)) / drafted.length,
      100,
    );
    progress(`floor of a round's hops: ${floor.floor_ms_p50} ms`);
    const sweep = await concurrencySweep(args, client, lm, prompts);

    const plainRuns = single.runs.get(PLAIN) as Runs;
    const plain = fastestRuns(plainRuns);
    const drafters = drafterReports(args, single.runs, reference, inproc);
    const samplingWire = samplingWireFigures(args, sampled, single.runs);
    // Speculative rounds only: a target-only round skips the draft hop and would make the path look cheaper.
    const singleStream = args.drafters.flatMap((name) => (single.runs.get(name) as Runs).flat().flatMap(decodeRounds));
    const overhead = overheadBreakdown(singleStream);
    const json = {
      target: stackTarget(args),
      prompts: measured.length,
      max_new_tokens: args["max-tokens"],
      repeats: args.repeats,
      policy: args.adaptive ? { kind: "adaptive", k_max: args["k-max"] } : { kind: "fixed", k: args.k },
      target_replicas: 1,
      draft_on_verdict: args["draft-on-verdict"],
      target_only_tokens_per_s: round(tokensPerS(plain), 1),
      target_only_identical_output: plainRuns.every((r, i) => r.every((one) => sameTokens(one.tokens, reference[i]))),
      target_step_ms: round(targetStepMs(plain)),
      target_only_ms_per_token: round(1000 / tokensPerS(plain)),
      projection_definition: FLAT_VERIFY_DEFINITION,
      efficiency_definition:
        "S / S* = model compute time (draft + target, as the services report it) / wall time of the speculative decode at the client; S against target-only decoding through the same stack, S* with target-only decoding at its measured ms per token through the stack",
      inproc_target_only_tokens_per_s: inproc?.target_only_tokens_per_s ?? null,
      drafters,
      sampling_wire: samplingWire,
      overhead_ms_p50: overhead.overhead_ms.p50,
      overhead_ms_p99: overhead.overhead_ms.p99,
      overhead_definition:
        "per speculative decode round (every drafter; first round excluded), single stream: round wall time at the gateway - draft compute - target compute, as the services report them",
      overhead,
      process_usage: processUsageFigures(single.usage, single.usageRounds),
      /** The least a round's hops cost here (bench/hop-floor.ts); the overhead above it is the services' own. */
      hop_floor: floor,
      overhead_above_floor_ms_p50: round(overhead.overhead_ms.p50 - floor.floor_ms_p50),
      redis_ping_ms: redisPing,
      /** An empty job through Queue.add, a Worker and QueueEvents, all in this process (bench:target's floor), p50. */
      bullmq_floor_round_trip_ms_p50: bullmqFloorMs,
      concurrency_mode: "plain",
      concurrency_definition:
        "tokens/s summed over concurrent streams of different tenants, in the window where every stream is past its first round and none has ended, best of the repeats; ceiling: steady batched decode steps (median step) at the same batch size and mean context in this process (bench/runtime.ts batchedDecode), best of the measurements taken right before each run (ceiling_best_step_tokens_per_s: from the fastest step); target_busy_share: share of the decode span the replica spent running batches",
      concurrency_tokens_per_stream: args["stream-tokens"],
      concurrency: sweep.figures(PLAIN),
      concurrency_speculative:
        args["sweep-drafter"] === PLAIN
          ? null
          : { drafter: args["sweep-drafter"], k: args.k, by_streams: sweep.figures(args["sweep-drafter"]) },
      inproc: inproc ?? null,
      machine: machineInfo(loadAtStart),
    };
    const summary = [
      `target-only through the gateway: ${json.target_only_tokens_per_s} tok/s (in-process ${json.inproc_target_only_tokens_per_s ?? "-"}); target step ${json.target_step_ms} ms, ${json.target_only_ms_per_token} ms per token through the stack`,
      ...Object.entries(drafters).map(
        ([name, d]) =>
          `${name}: alpha ${d.alpha}, tokens/round ${d.tokens_per_round}, nodes/round ${d.nodes_per_round}, c ${d.c}, S ${d.speedup}, S* ${d.ideal_speedup}, efficiency ${d.efficiency} (in-process ${d.inproc?.efficiency ?? "-"}), identical ${d.identical_output}; projection with a flat verify cost: S* ${d.projected_speedup_flat_verify}`,
      ),
      `overhead per round: p50 ${json.overhead_ms_p50} ms, p99 ${json.overhead_ms_p99} ms; p50 parts: queue wait ${overhead.queue_wait_ms.p50}, result return ${overhead.result_return_ms.p50}, draft transport ${overhead.draft_transport_ms.p50}, gateway ${overhead.gateway_ms.p50} ms; empty BullMQ job ${bullmqFloorMs} ms, Redis PING ${redisPing.p50} ms`,
      processUsageLine(json.process_usage),
      `floor of a round's hops here: ${floor.floor_ms_p50} ms (push and reply through Redis ${floor.verify_hops_ms_p50}, proposal over a gRPC stream ${floor.proposal_hops_ms_p50} ms (bare TCP ${floor.proposal_tcp_hops_ms_p50}), between processes at rest); overhead above it ${json.overhead_above_floor_ms_p50} ms`,
      `sampling (${samplingWire.drafter}, T ${samplingWire.temperature}): ${samplingWire.draft_distribution_bytes_per_round} bytes of draft distributions per round, ${samplingWire.draft_distribution_bytes_per_draft_token} per draft token (dense float32: ${samplingWire.dense_float32_bytes_per_draft_token}); greedy: ${samplingWire.greedy_draft_distribution_bytes} bytes; trees: ${samplingWire.tree.draft_tree_bytes_per_round} bytes of tree per round (${samplingWire.tree.nodes_per_round} nodes)`,
      ...Object.entries(json.concurrency).map(
        ([n, f]) =>
          `${n} streams (plain): ${f.tokens_per_s} tok/s, ceiling ${f.ceiling_tokens_per_s}, ratio ${f.ratio}, batch ${f.mean_batch_size}, target busy ${f.target_busy_share}`,
      ),
    ];
    return { summary, json };
  } finally {
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
    client.close();
    await stack.stop();
  }
}

/** The in-process benchmark (bench/speculative.ts) on the same prompts, drafters and K, run by its own code. */
async function inProcessFigures(args: Args): Promise<Record<string, unknown>> {
  progress("in-process benchmark (bench/speculative.ts) on the same prompts, drafters and K");
  const report = await runInProcess([
    ...["--target", TARGET, "--prompts", String(args.prompts), "--tokens", String(args["max-tokens"])],
    ...["--repeats", String(args.repeats), "--k", String(args.k)],
    ...["--drafters", args.drafters.filter((d) => d !== LOOKAHEAD).join(",")],
    // Lookahead at the replicas' defaults, as the stack runs it.
    ...["--lookahead", args.drafters.includes(LOOKAHEAD) ? lookaheadArg(DEFAULT_LOOKAHEAD) : "none"],
    ...["--sweep-lookahead", ""],
    // The stack's draft service runs its models on one thread: the same here, so that c means the same.
    ...["--k-max", String(args["k-max"]), "--draft-threads", "1"],
    ...["--tree-width", String(args["tree-width"]), "--tree-nodes", String(args["tree-nodes"])],
  ]);
  return report.json;
}

async function startStack(args: Args): Promise<LocalStack> {
  const stackDrafters = args.drafters.map(drafterSpec).join(",");
  progress(`starting the stack: ${stackTarget(args)}, drafters ${stackDrafters}`);
  return await startLocalStack({
    pair: "cost-scaled",
    targetModel: stackTarget(args),
    drafters: stackDrafters,
    defaultDrafter: args.drafters[0],
    replicas: 1,
    gatewayPort: 0,
    metricsPorts: "free",
    draftOnVerdict: args["draft-on-verdict"],
    logLevel: "warn",
    log: (line) => process.stderr.write(`[stack] ${line}\n`),
  });
}

/** The single-stream request of a prompt through one configuration (PLAIN: K = 0; `<drafter>/tree`: trees). */
function streamInput(args: Args, prompt: number[], config: string, tag: string): GenerateInput {
  const policy: Pick<GenerateInput, "k" | "k_max"> = args.adaptive
    ? { k: "adaptive", k_max: args["k-max"] }
    : { k: args.k };
  const drafter = config.endsWith(TREE_SUFFIX) ? config.slice(0, -TREE_SUFFIX.length) : config;
  return {
    prompt,
    max_tokens: args["max-tokens"],
    drafter,
    ...(drafter === PLAIN ? { k: 0 } : policy),
    ...(drafter !== config && {
      tree: { width: args["tree-width"], nodes: args["tree-nodes"], adaptive: args["tree-adaptive"] },
    }),
    tenant_id: "bench",
    request_id: tag,
  };
}

/**
 * Every prompt through target-only decoding and each drafter, interleaved prompt by prompt, `repeats` times; with what
 * each process spends, and waits for a core, during the speculative runs.
 */
async function singleStreamRuns(args: Args, client: SpecgateClient, stack: LocalStack, measured: number[][]) {
  const configs = [PLAIN, ...args.drafters.flatMap(variants)];
  progress("warming up");
  for (const drafter of configs) await streamOnce(client, streamInput(args, measured[0], drafter, `warm-${drafter}`));

  const runs = new Map<string, Runs>(configs.map((c) => [c, measured.map(() => [])]));
  const redisPids = stack.pids.filter((pid) => !stack.services.some((service) => service.pid === pid));
  const usage = new UsageMeter(
    new Map([
      ...stack.services.map((service): [string, number] => [service.name, service.pid]),
      ...redisPids.map((pid): [string, number] => ["redis", pid]),
      ["client", process.pid],
    ]),
  );
  let usageRounds = 0;
  const steps = new Progress(progress, args.repeats * measured.length);
  for (let repeat = 0; repeat < args.repeats; repeat++) {
    for (const [i, prompt] of measured.entries()) {
      const line: string[] = [];
      let plainRate = 0;
      for (const drafter of configs) {
        const request = streamInput(args, prompt, drafter, `r${repeat}-p${i}-${drafter}`);
        const one = await (drafter === PLAIN
          ? streamOnce(client, request)
          : usage.measure(() => streamOnce(client, request)));
        if (drafter !== PLAIN) usageRounds += one.stats.rounds;
        runs.get(drafter)?.[i].push(one);
        const rate = tokensPerS([one]);
        if (drafter === PLAIN) plainRate = rate;
        line.push(
          drafter === PLAIN ? `target-only ${round(rate, 1)} tok/s` : `${drafter} ${round(rate / plainRate, 2)}x`,
        );
      }
      steps.step(`repeat ${repeat + 1}/${args.repeats} prompt ${i + 1}/${measured.length}: ${line.join(", ")}`);
    }
  }
  return { runs, usage, usageRounds };
}

/**
 * Sampling mode with the first drafter, chains and trees: it moves the draft's distributions over the wire (greedy
 * moves tokens only), and the trees' nodes.
 */
async function samplingRuns(args: Args, client: SpecgateClient, measured: number[][]) {
  const sampler = args.drafters[0];
  const run = async (config: string) => {
    const sampled: StreamRun[] = [];
    for (const [i, prompt] of measured.entries()) {
      sampled.push(
        await streamOnce(client, {
          ...streamInput(args, prompt, config, `sampled-p${i}-${config}`),
          ...SAMPLING,
          seed: 1000 + i,
        }),
      );
    }
    progress(`sampling with ${config}: ${round(sum(sampled.map((r) => r.stats.rounds)))} rounds`);
    return sampled;
  };
  return { chains: await run(sampler), trees: await run(variants(sampler).at(-1) ?? sampler) };
}

/**
 * Bytes of draft distributions on the wire in sampling mode, per round and per draft token, and in greedy mode; and
 * bytes of the trees sent per round in sampling mode.
 */
function samplingWireFigures(
  args: Args,
  { chains: sampled, trees }: Awaited<ReturnType<typeof samplingRuns>>,
  runs: Map<string, Runs>,
) {
  const sampler = args.drafters[0];
  const stats = sampled.map((r) => r.stats);
  const treeStats = trees.map((r) => r.stats);
  const treeRounds = sum(treeStats.map((s) => s.rounds));
  const rounds = sum(stats.map((s) => s.rounds));
  const draftTokens = sum(stats.map((s) => s.draft_tokens));
  const bytes = sum(stats.map((s) => Number(s.draft_distribution_bytes)));
  const greedyBytes = sum(
    args.drafters.flatMap((name) =>
      (runs.get(name) as Runs).flat().map((r) => Number(r.stats.draft_distribution_bytes)),
    ),
  );
  const draftVocab = resolveModel(DRAFTER_MODELS[sampler] ?? TARGET).config.vocab_size;
  return {
    drafter: sampler,
    ...SAMPLING,
    rounds,
    alpha: round(draftTokens === 0 ? 0 : sum(stats.map((s) => s.accepted_tokens)) / draftTokens),
    draft_distribution_bytes_per_round: round(bytes / rounds, 1),
    draft_distribution_bytes_per_draft_token: round(bytes / Math.max(1, draftTokens), 1),
    /** What a dense float32 q over the draft's vocabulary would take per draft token. */
    dense_float32_bytes_per_draft_token: draftVocab === undefined ? null : 4 * draftVocab,
    greedy_draft_distribution_bytes: greedyBytes,
    /** The same requests drafting trees: their nodes carry no q (deterministic drafts), so only the tree moves. */
    tree: {
      shape: { width: args["tree-width"], nodes: args["tree-nodes"] },
      rounds: treeRounds,
      tokens_per_round: round(sum(treeStats.map((s) => s.generated_tokens)) / Math.max(1, treeRounds)),
      nodes_per_round: round(sum(treeStats.map((s) => s.draft_tokens)) / Math.max(1, treeRounds), 2),
      draft_tree_bytes_per_round: round(
        sum(treeStats.map((s) => Number(s.draft_tree_bytes))) / Math.max(1, treeRounds),
        1,
      ),
      draft_distribution_bytes_per_round: round(
        sum(treeStats.map((s) => Number(s.draft_distribution_bytes))) / Math.max(1, treeRounds),
        1,
      ),
    },
  };
}

/**
 * Each drafter's figures through the stack, and its tree variant's, beside the in-process benchmark's own for the same
 * policy (its `<drafter>/tree` for a tree variant).
 */
function drafterReports(
  args: Args,
  runs: Map<string, Runs>,
  reference: readonly number[][],
  inproc: Record<string, unknown> | undefined,
) {
  const plainRuns = runs.get(PLAIN) as Runs;
  const inprocDrafters = (inproc?.drafters ?? {}) as Record<string, Record<string, unknown>>;
  const policyName = args.adaptive ? "adaptive" : "fixed";
  return Object.fromEntries(
    args.drafters.flatMap(variants).map((name) => {
      const figures = drafterFigures(runs.get(name) as Runs, plainRuns, reference, args.repeats);
      const isTree = name.endsWith(TREE_SUFFIX);
      // The in-process benchmark's tree variants and its Lookahead entry have no fixed/adaptive split.
      const own = (isTree || name === LOOKAHEAD ? inprocDrafters[name] : inprocDrafters[name]?.[policyName]) as
        | Record<string, number>
        | undefined;
      const drafter = isTree ? name.slice(0, -TREE_SUFFIX.length) : name;
      const report = {
        model: DRAFTER_MODELS[drafter] ?? null,
        ...(isTree && {
          tree_shape: { width: args["tree-width"], nodes: args["tree-nodes"], adaptive: args["tree-adaptive"] },
        }),
        ...figures,
        inproc: own && {
          alpha: own.alpha,
          mean_accepted_per_round: own.mean_accepted_per_round,
          c: own.c,
          speedup: own.speedup,
          ideal_speedup: own.ideal_speedup,
          efficiency: own.efficiency,
          tokens_per_round: own.tokens_per_round,
          nodes_per_round: own.nodes_per_round,
          projected_speedup_flat_verify: own.projected_speedup_flat_verify,
          identical_output: own.identical_output,
          tokens_per_s: own.tokens_per_s,
        },
        efficiency_vs_inproc: own ? round(figures.efficiency / own.efficiency) : null,
      };
      return [name, report];
    }),
  );
}

/**
 * Aggregate tokens/s at each number of concurrent streams, plain and with the sweep's drafter, each run beside the
 * target's batched-forward ceiling measured in this process right before it.
 */
async function concurrencySweep(args: Args, client: SpecgateClient, lm: OnnxCausalLM, prompts: readonly number[][]) {
  const streamTokens = args["stream-tokens"];
  const sweepDrafters = [PLAIN, ...(args["sweep-drafter"] === PLAIN ? [] : [args["sweep-drafter"]])];
  const ceilings = new Map<number, number[]>(args.streams.map((n) => [n, []]));
  const bestStepCeilings = new Map<number, number[]>(args.streams.map((n) => [n, []]));
  type SweepRun = Awaited<ReturnType<typeof concurrentTokensPerS>>;
  const sweep = new Map<string, Map<number, SweepRun[]>>(
    sweepDrafters.map((d) => [d, new Map(args.streams.map((n) => [n, []]))]),
  );
  const steps = new Progress(progress, args.streams.length * args.repeats);
  for (const n of args.streams) {
    for (let repeat = 0; repeat < args.repeats; repeat++) {
      const line: string[] = [];
      for (const drafter of sweepDrafters) {
        // The ceiling right before each run, so that both see about the same machine load; after a pause, so that
        // the stack has finished releasing the last run's sequences.
        await sleep(SETTLE_MS);
        const measuredCeiling = await batchedDecode(lm, prompts[0], n, false, ceilingContext(prompts, n, streamTokens));
        const ceiling = measuredCeiling.tokensPerS;
        ceilings.get(n)?.push(ceiling);
        bestStepCeilings.get(n)?.push(measuredCeiling.bestTokensPerS);
        const figures = await concurrentTokensPerS(
          client,
          prompts,
          n,
          streamTokens,
          drafter,
          args.k,
          `s${n}-r${repeat}-${drafter}`,
        );
        sweep.get(drafter)?.get(n)?.push(figures);
        line.push(
          `ceiling ${round(ceiling, 1)} tok/s, ${drafter === PLAIN ? "plain" : drafter} ${round(figures.tokensPerS, 1)} tok/s (batch ${round(figures.meanBatch, 1)}, target busy ${round(figures.busyShare, 2)})`,
        );
      }
      steps.step(`${n} streams, repeat ${repeat + 1}/${args.repeats}: ${line.join("; ")}`);
    }
  }
  // Best against best: other work on the machine only ever slows either down.
  const figures = (drafter: string) =>
    Object.fromEntries(
      [...(sweep.get(drafter) ?? [])].map(([n, runsOfN]): [string, SweepFigures] => {
        const best = runsOfN.reduce((a, b) => (b.tokensPerS > a.tokensPerS ? b : a));
        const ceiling = Math.max(...(ceilings.get(n) ?? []));
        return [
          String(n),
          {
            tokens_per_s: round(best.tokensPerS, 1),
            tokens_per_s_median: round(spread(runsOfN.map((r) => r.tokensPerS)).median, 1),
            ceiling_tokens_per_s: round(ceiling, 1),
            ceiling_tokens_per_s_median: round(spread(ceilings.get(n) ?? []).median, 1),
            ceiling_best_step_tokens_per_s: round(Math.max(...(bestStepCeilings.get(n) ?? [])), 1),
            ratio: round(best.tokensPerS / ceiling),
            mean_batch_size: round(best.meanBatch, 2),
            target_busy_share: round(best.busyShare),
            target_compute_tokens_per_s: round(best.computeTokensPerS, 1),
            round_p50: roundParts(best.rounds),
          },
        ];
      }),
    );
  return { figures };
}
