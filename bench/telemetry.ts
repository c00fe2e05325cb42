/**
 * `npm run bench -- --mode telemetry [--round-us 200] [--rounds 20] [--requests 10] [--repeats 30]`: what tracing
 * and metrics cost per speculation round.
 *
 * Each request runs the instrumentation of every service for every round (gateway request and round, trace context
 * into the verify job, the replica's batch and job spans, round and request metrics) around a calibrated busy loop
 * standing in for the round's own work. Variants run interleaved in one process, side by side, and are compared with
 * the same rounds without any telemetry call; each timed block ends with the span processor flushed, so span export
 * is inside the time:
 *   disabled           OTEL_SDK_DISABLED=true: every call a no-op
 *   tracing-off        the default: Prometheus metrics recorded, no tracer provider
 *   in-memory          traces to an in-memory exporter (batch processor), one span per round
 *   otlp-round-events  traces over OTLP/HTTP protobuf to a receiver in this process, rounds as request span events
 *   otlp-round-spans   traces over OTLP/HTTP protobuf to a receiver in this process, one span per round
 *
 * With --stack it also measures the real stack: two local stacks side by side (redis-server, draft service, one
 * target replica, gateway), one with the default configuration (traces off) and one exporting traces over OTLP
 * (http/protobuf) to a receiver in this process; the same greedy requests alternate between them, one at a time, and
 * fixed K = 4 (so both sides run the same rounds) and the report gives the time per token of each and their ratio. `--stack-requests N` (default 16) per stack,
 * `--max-tokens N` (default 48).
 */
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { BatchSpanProcessor, InMemorySpanExporter } from "@opentelemetry/sdk-trace";
import { type LocalStack, startLocalStack } from "../deploy/local-stack.ts";
import { SpecgateClient } from "../sdk/index.ts";
import { injectIntoCarrier } from "../services/telemetry/propagation.ts";
import type { FinishedRequest, RequestLabels, VerifiedRound } from "../services/telemetry/records.ts";
import { startRequestTrace } from "../services/telemetry/request-trace.ts";
import { startTelemetry, type Telemetry } from "../services/telemetry/start.ts";
import { startVerifyBatch } from "../services/telemetry/verify-trace.ts";
import { OtlpReceiver } from "../test/support/otlp-receiver.ts";
import type { BenchReport } from "./cli.ts";
import { storyPrompts } from "./prompts.ts";

const VARIANTS = ["none", "disabled", "tracing-off", "in-memory", "otlp-round-events", "otlp-round-spans"] as const;
type Variant = (typeof VARIANTS)[number];

const LABELS: RequestLabels = { tenant: "bench", model: "target", drafter: "draft" };
const K = 4;

let sink = 0;
function spin(iterations: number): void {
  let x = sink;
  for (let i = 0; i < iterations; i++) x = (x * 1664525 + 1013904223) % 4294967296;
  sink = x;
}

/** Busy-loop iterations per microsecond on this machine now. */
function calibrate(): number {
  const iterations = 2_000_000;
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    spin(iterations);
    best = Math.min(best, performance.now() - start);
  }
  return iterations / (best * 1000);
}

function round(index: number, accepted: number): VerifiedRound {
  return {
    round: index + 1,
    k: K,
    proposed: K,
    accepted,
    nextToken: 42,
    replica: "0",
    batchSize: 1,
    reprefilled: false,
    draftMs: 0.1,
    queueWaitMs: 0.05,
    verifyMs: 0.2,
    roundMs: 0.4,
  };
}

function finished(rounds: number, accepted: number): FinishedRequest {
  return {
    stats: {
      rounds,
      generated_tokens: accepted + rounds,
      draft_tokens: rounds * K,
      accepted_tokens: accepted,
      time_to_first_token_ms: 1,
      total_time_ms: rounds,
    },
    inputTokens: 16,
    finishReason: "length",
    status: "OK",
  };
}

/** One request with all its services' instrumentation (or none) around `spinPerRound` of work per round. */
function runRequest(telemetry: Telemetry | undefined, rounds: number, spinPerRound: number, roundSpans: boolean) {
  if (telemetry === undefined) {
    for (let i = 0; i < rounds; i++) spin(spinPerRound);
    return;
  }
  const request = startRequestTrace({
    transport: { protocol: "grpc", method: "specgate.v1.Gateway/Generate" },
    labels: LABELS,
    metrics: telemetry.metrics,
    roundSpans,
  });
  let accepted = 0;
  for (let i = 0; i < rounds; i++) {
    const roundTrace = request.startRound();
    const job = { trace: injectIntoCarrier(roundTrace.context), enqueuedAtMs: Date.now() };
    const batch = startVerifyBatch({ replica: "0", jobs: [job], metrics: telemetry.metrics });
    spin(spinPerRound);
    const roundAccepted = i % (K + 1);
    accepted += roundAccepted;
    batch.end([{ proposed: K, accepted: roundAccepted }]);
    roundTrace.end(round(i, roundAccepted));
  }
  request.end(finished(rounds, accepted));
}

interface RunningVariant {
  telemetry: Telemetry | undefined;
  roundSpans: boolean;
  /** Exports what the span processor holds (inside the timed block). */
  flush: () => Promise<void>;
}

async function startVariant(variant: Variant, receiverUrl: string): Promise<RunningVariant> {
  const metrics = { port: 0 };
  const untraced = async (env: Record<string, string>) => ({
    telemetry: await startTelemetry({ serviceName: "specgate-gateway", metrics, env }),
    roundSpans: false,
    flush: async () => {},
  });
  if (variant === "none") return { telemetry: undefined, roundSpans: false, flush: async () => {} };
  if (variant === "disabled") return untraced({ OTEL_SDK_DISABLED: "true" });
  if (variant === "tracing-off") return untraced({});
  const exporter =
    variant === "in-memory" ? new InMemorySpanExporter() : new OTLPTraceExporter({ url: `${receiverUrl}/v1/traces` });
  const processor = new BatchSpanProcessor({ exporter });
  const telemetry = await startTelemetry({
    serviceName: "specgate-gateway",
    metrics,
    env: {},
    spanProcessors: [processor],
  });
  return { telemetry, roundSpans: variant !== "otlp-round-events", flush: () => processor.forceFlush() };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

interface Pass {
  /** Microseconds per round of each measured block, per variant. */
  perRoundUs: Record<Variant, number[]>;
}

/** Blocks of `requests` requests per variant, interleaved, `repeats` times; short blocks so that a min is meaningful. */
async function measure(spinPerRound: number, rounds: number, requests: number, repeats: number, label: string) {
  const receiver = await OtlpReceiver.start();
  const pass: Pass = { perRoundUs: Object.fromEntries(VARIANTS.map((v) => [v, []])) as never };
  for (let repeat = 0; repeat < repeats; repeat++) {
    // Rotate the order so that no variant always runs first (or right after a garbage-heavy one).
    const order = VARIANTS.map((_, i) => VARIANTS[(i + repeat) % VARIANTS.length]);
    for (const variant of order) {
      const { telemetry, roundSpans, flush } = await startVariant(variant, receiver.httpUrl);
      for (let i = 0; i < 2; i++) runRequest(telemetry, rounds, spinPerRound, roundSpans);
      await flush();
      const start = performance.now();
      for (let i = 0; i < requests; i++) runRequest(telemetry, rounds, spinPerRound, roundSpans);
      await flush();
      pass.perRoundUs[variant].push(((performance.now() - start) * 1000) / (requests * rounds));
      await telemetry?.shutdown();
      receiver.clear();
    }
    if ((repeat + 1) % 10 === 0 || repeat + 1 === repeats) {
      process.stderr.write(`telemetry bench (${label}): repeat ${repeat + 1}/${repeats}\n`);
    }
  }
  await receiver.close();
  return pass;
}

interface StackFigures {
  requests: number;
  tokens: number;
  rounds: number;
  ms_per_token: number;
  ms_per_round: number;
}

/** The real stack with traces off and on (OTLP to a receiver here), the same requests alternating between them. */
async function measureStacks(requests: number, maxTokens: number) {
  const receiver = await OtlpReceiver.start();
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("OTEL_")));
  const common = { gatewayPort: 0, metricsPorts: "free" as const, replicas: 1, log: () => {} };
  process.stderr.write("telemetry bench (stack): starting two local stacks\n");
  const stacks: Record<"off" | "on", LocalStack> = Object.fromEntries(
    await Promise.all([
      startLocalStack({ ...common, env: { ...env, REDIS_URL: undefined } }).then((stack) => ["off", stack]),
      startLocalStack({
        ...common,
        env: {
          ...env,
          REDIS_URL: undefined,
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.httpUrl,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
        },
      }).then((stack) => ["on", stack]),
    ]),
  );
  const clients = {
    off: new SpecgateClient({ address: stacks.off.gatewayAddress, timeoutMs: 120_000 }),
    on: new SpecgateClient({ address: stacks.on.gatewayAddress, timeoutMs: 120_000 }),
  };
  const totals = { off: { ms: 0, tokens: 0, rounds: 0 }, on: { ms: 0, tokens: 0, rounds: 0 } };
  // Per prompt, time per token on / off: paired, so a burst of load on the machine skews one pair, not the figure.
  const pairRatios: number[] = [];
  try {
    const prompts = storyPrompts(requests);
    // Warm both stacks (model sessions, caches, connections) before timing.
    for (const side of ["off", "on"] as const) {
      await clients[side].generate({ prompt: prompts[0], max_tokens: maxTokens, temperature: 0, k: 4 });
    }
    for (let i = 0; i < requests; i++) {
      // Alternate which side goes first so neither always follows the other's garbage.
      const order = i % 2 === 0 ? (["off", "on"] as const) : (["on", "off"] as const);
      const msPerToken = { off: 0, on: 0 };
      for (const side of order) {
        const start = performance.now();
        const result = await clients[side].generate({
          prompt: prompts[i],
          max_tokens: maxTokens,
          temperature: 0,
          k: 4,
        });
        const ms = performance.now() - start;
        totals[side].ms += ms;
        totals[side].tokens += result.token_ids.length;
        totals[side].rounds += result.stats?.rounds ?? 0;
        msPerToken[side] = ms / result.token_ids.length;
      }
      pairRatios.push(msPerToken.on / msPerToken.off);
      if ((i + 1) % 4 === 0) process.stderr.write(`telemetry bench (stack): ${i + 1}/${requests} request pairs\n`);
    }
  } finally {
    clients.off.close();
    clients.on.close();
    await Promise.all([stacks.off.stop(), stacks.on.stop()]);
    await receiver.close();
  }
  const figures = (side: "off" | "on"): StackFigures => ({
    requests,
    tokens: totals[side].tokens,
    rounds: totals[side].rounds,
    ms_per_token: totals[side].ms / totals[side].tokens,
    ms_per_round: totals[side].ms / totals[side].rounds,
  });
  const spans = receiver.exports.filter((e) => e.signal === "traces").length;
  return {
    tracing_off: figures("off"),
    tracing_on: figures("on"),
    ratio_on_off: figures("on").ms_per_token / figures("off").ms_per_token,
    ratio_on_off_median_of_pairs: median(pairRatios),
    otlp_trace_exports_received: spans,
  };
}

export async function run(argv: readonly string[]): Promise<BenchReport> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      "round-us": { type: "string", default: "200" },
      rounds: { type: "string", default: "20" },
      requests: { type: "string", default: "10" },
      repeats: { type: "string", default: "30" },
      stack: { type: "boolean", default: false },
      "stack-requests": { type: "string", default: "16" },
      "max-tokens": { type: "string", default: "48" },
    },
  });
  const roundUs = Number(values["round-us"]);
  const rounds = Number(values.rounds);
  const requests = Number(values.requests);
  const repeats = Number(values.repeats);

  // Pure instrumentation cost (no work per round), then the same beside a round of `roundUs` of work.
  const bare = await measure(0, rounds, requests, repeats, "instrumentation only");
  const loaded = await measure(Math.round(calibrate() * roundUs), rounds, requests, repeats, `${roundUs} us rounds`);

  const min = (values: number[]) => Math.min(...values);
  const variants: Record<string, Record<string, number>> = {};
  for (const variant of VARIANTS) {
    variants[variant] = {
      overhead_us_per_round: min(bare.perRoundUs[variant]) - min(bare.perRoundUs.none),
      overhead_us_per_round_median: median(bare.perRoundUs[variant]) - median(bare.perRoundUs.none),
      ratio_min: min(loaded.perRoundUs[variant]) / min(loaded.perRoundUs.none),
      ratio_median: median(loaded.perRoundUs[variant]) / median(loaded.perRoundUs.none),
    };
  }
  const machine = { cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, node: process.version };
  const summary = [
    `telemetry cost per round (${repeats} interleaved blocks of ${requests} requests x ${rounds} rounds per variant; ` +
      `${machine.cpu}, ${machine.cores} cores, node ${machine.node})`,
    `variant            overhead us/round (min, median)   time ratio beside ${roundUs} us rounds (min, median)`,
    ...VARIANTS.map((v) => {
      const r = variants[v];
      return `${v.padEnd(18)} ${r.overhead_us_per_round.toFixed(2).padStart(10)} ${r.overhead_us_per_round_median.toFixed(2).padStart(10)} ${r.ratio_min.toFixed(3).padStart(26)} ${r.ratio_median.toFixed(3).padStart(8)}`;
    }),
  ];
  const stack = values.stack
    ? await measureStacks(Number(values["stack-requests"]), Number(values["max-tokens"]))
    : null;
  if (stack !== null) {
    summary.push(
      `real stack, stories260k, ${stack.tracing_off.requests} greedy requests per side alternating, ` +
        `${stack.tracing_off.tokens} tokens in ${stack.tracing_off.rounds} rounds (off) / ` +
        `${stack.tracing_on.tokens} in ${stack.tracing_on.rounds} (on):`,
      `  traces off ${stack.tracing_off.ms_per_token.toFixed(3)} ms/token (${stack.tracing_off.ms_per_round.toFixed(3)} ms/round), ` +
        `traces on (OTLP) ${stack.tracing_on.ms_per_token.toFixed(3)} ms/token (${stack.tracing_on.ms_per_round.toFixed(3)} ms/round), ` +
        `ratio on/off ${stack.ratio_on_off.toFixed(3)} (median of per-prompt pairs ${stack.ratio_on_off_median_of_pairs.toFixed(3)})`,
    );
  }
  return {
    summary,
    json: { telemetry: { round_work_us: roundUs, rounds, requests, repeats, machine, variants, stack } },
  };
}
