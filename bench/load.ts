/**
 * `npm run load -- [flags]`: an open-loop load generator for a gateway on this machine. Requests arrive on a Poisson
 * schedule fixed in advance from a seed (bench/load-schedule.ts), each sent when its time comes whatever the earlier
 * ones are doing, through the SDK's streaming call so the time to the first token is seen. Bounded in count
 * (--requests) and time (--duration-s for arrivals, --timeout-s per request); loopback only. Progress on stderr;
 * the report (bench/load-summary.ts) on stdout, its last line one JSON object.
 *
 * Without --address it starts its own local stack (deploy/local-stack.ts) and stops it at the end. --find-rate
 * searches for the sustainable rate first (bench/load-rate-search.ts); --overload F then runs at F times it.
 */
import { loadavg } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { z } from "zod";
import { type LocalStack, MODEL_PAIRS, startLocalStack } from "../deploy/local-stack.ts";
import { loadServedModel } from "../gateway/served-model.ts";
import { type GenerateInput, SpecgateClient, SpecgateError } from "../sdk/index.ts";
import { isLoopbackHost } from "../sdk/loopback.ts";
import { findSustainableRate, type RateProbe } from "./load-rate-search.ts";
import { type Arrival, arrivalSchedule, type LengthDistribution } from "./load-schedule.ts";
import { type LatencyObjective, type LoadSummary, type RequestOutcome, summarize, sustained } from "./load-summary.ts";
import { storyPrompts } from "./prompts.ts";
import { machineInfo } from "./runtime.ts";
import { round } from "./stats.ts";

const count = z.coerce.number().int().positive();
const positive = z.coerce.number().positive();
const FLAGS = {
  rate: [positive.default(1), "mean arrivals per second (Poisson); with --find-rate, where the search starts"],
  requests: [count.default(100), "most requests sent"],
  "duration-s": [positive.default(60), "no request is sent later than this many seconds after the start"],
  seed: [z.coerce.number().int().nonnegative().default(1), "seed of the arrival times, lengths and prompts"],
  "prompt-median": [count.default(64), "prompt tokens: median of the log-normal length distribution"],
  "prompt-sigma": [z.coerce.number().nonnegative().default(0.7), "prompt tokens: σ of the length's logarithm"],
  "prompt-max": [count.default(256), "prompt tokens: longest (shortest: 4)"],
  "output-median": [count.default(48), "max_tokens: median of the log-normal length distribution"],
  "output-sigma": [z.coerce.number().nonnegative().default(0.6), "max_tokens: σ of the length's logarithm"],
  "output-max": [count.default(128), "max_tokens: largest (smallest: 4)"],
  "ttft-slo-ms": [positive.default(1000), "latency objective: time to first token at most this"],
  "tpot-slo-ms": [positive.default(100), "latency objective: time per output token after the first at most this"],
  "timeout-s": [positive.default(60), "deadline of each request (a request past it counts as failed)"],
  drafter: [z.string().min(1).optional(), 'drafter of every request (default: the gateway\'s; "none": plain decoding)'],
  address: [z.string().min(1).optional(), "host:port of a running gateway on this machine (default: start a stack)"],
  pair: [z.enum(Object.keys(MODEL_PAIRS) as [keyof typeof MODEL_PAIRS]).default("cost-scaled"), "own stack: models"],
  replicas: [count.default(1), "own stack: target replicas"],
  "max-in-flight": [count.optional(), "own stack: gateway --max-in-flight (default: the gateway's)"],
  "max-queued": [z.coerce.number().int().nonnegative().optional(), "own stack: gateway --max-queued"],
  "max-queue-ms": [count.optional(), "own stack: gateway --max-queue-ms"],
  "kv-budget-bytes": [count.optional(), "own stack: gateway --kv-budget-bytes"],
  "find-rate": [z.boolean().default(false), "first search for the sustainable rate (see --probes)"],
  probes: [count.default(8), "--find-rate: runs of the search (doubling, then bisecting)"],
  "probe-s": [
    positive.default(10),
    "--find-rate: seconds of arrivals per search run (long enough to reach a steady state)",
  ],
  attainment: [z.coerce.number().min(0).max(1).default(0.9), "--find-rate: share meeting the objective to pass"],
  overload: [positive.default(1), "--find-rate: measure at this multiple of the sustainable rate"],
  json: [z.boolean().default(false), "print only the JSON line on stdout"],
  help: [z.boolean().default(false), "print this help"],
} as const;

type Flag = keyof typeof FLAGS;
const argsSchema = z.object(
  Object.fromEntries(Object.entries(FLAGS).map(([name, [schema]]) => [name, schema])) as {
    [K in Flag]: (typeof FLAGS)[K][0];
  },
);
export type LoadArgs = z.output<typeof argsSchema>;

const PROMPT_MIN = 4;
const OUTPUT_MIN = 4;

export function loadHelp(): string {
  const lines = Object.entries(FLAGS).map(([name, [schema, help]]) => {
    const fallback = schema.def.type === "default" ? ` (default ${JSON.stringify(schema.def.defaultValue)})` : "";
    return `  --${name.padEnd(16)} ${help}${fallback}`;
  });
  return [
    "npm run load -- [flags]: open-loop load on a specgate gateway on this machine (Poisson arrivals from a seed,",
    "log-normal prompt and output lengths, streaming). Reports completed, shed (RESOURCE_EXHAUSTED), failed, ttft and",
    "tpot p50/p99, tokens/s and goodput (requests/s meeting the latency objective); the last stdout line is JSON.",
    "",
    ...lines,
  ].join("\n");
}

export function parseLoadArgs(argv: readonly string[]): LoadArgs {
  const { values } = parseArgs({
    args: [...argv],
    options: Object.fromEntries(
      Object.entries(FLAGS).map(([name, [schema]]) => [
        name,
        { type: schema.def.type === "default" && typeof schema.def.defaultValue === "boolean" ? "boolean" : "string" },
      ]),
    ) as Record<string, { type: "boolean" | "string" }>,
  });
  const parsed = argsSchema.safeParse(values);
  if (!parsed.success) throw new TypeError(z.prettifyError(parsed.error));
  if (parsed.data.address !== undefined && !isLoopbackHost(parsed.data.address.replace(/:\d+$/, ""))) {
    throw new RangeError(`--address ${parsed.data.address}: the load generator only runs against this machine`);
  }
  return parsed.data;
}

function progress(message: string): void {
  process.stderr.write(`[load] ${message}\n`);
}

/** Prompt token ids: windows of a corpus of story text, each starting with BOS. */
class PromptSource {
  readonly #corpus: number[];

  constructor(
    encode: (text: string) => number[],
    private readonly bos: number[],
  ) {
    this.#corpus = encode(storyPrompts(80).join(". "));
  }

  prompt(arrival: Arrival): number[] {
    const body = arrival.promptTokens - this.bos.length;
    const start = Math.floor(arrival.promptStart * this.#corpus.length);
    const ids = [...this.bos];
    for (let i = 0; i < body; i++) ids.push(this.#corpus[(start + i) % this.#corpus.length]);
    return ids;
  }
}

interface Target {
  readonly client: SpecgateClient;
  readonly prompts: PromptSource;
  /** Longest prompt + output the model's context holds. */
  readonly contextLength: number;
}

/** One request: streamed, timed at the client, classified. */
async function send(target: Target, input: GenerateInput, timeoutMs: number, t0: number): Promise<RequestOutcome> {
  const sentMs = performance.now() - t0;
  let firstTokenMs: number | undefined;
  let lastTokenMs: number | undefined;
  let outputTokens = 0;
  try {
    for await (const event of target.client.stream(input, { timeoutMs })) {
      if (event.type !== "delta" || event.token_ids.length === 0) continue;
      lastTokenMs = performance.now() - t0;
      firstTokenMs ??= lastTokenMs;
      outputTokens += event.token_ids.length;
    }
    return { kind: "completed", sentMs, firstTokenMs, lastTokenMs, endMs: performance.now() - t0, outputTokens };
  } catch (error) {
    const endMs = performance.now() - t0;
    const failure = error instanceof SpecgateError ? error : undefined;
    if (failure?.codeName === "RESOURCE_EXHAUSTED" && outputTokens === 0) {
      return { kind: "shed", sentMs, endMs, retryAfterMs: failure.retryAfterMs };
    }
    return { kind: "failed", sentMs, endMs, code: failure?.codeName ?? String(error) };
  }
}

export interface LoadRun {
  readonly rate_per_s: number;
  readonly summary: LoadSummary;
  /** Largest delay between an arrival's scheduled time and its send: how open the loop stayed. */
  readonly max_send_lag_ms: number;
}

/** Sends the schedule's requests at their times without waiting for answers, then waits for every answer. */
async function runSchedule(target: Target, args: LoadArgs, ratePerS: number, maxRequests: number): Promise<LoadRun> {
  const output: LengthDistribution = {
    median: args["output-median"],
    sigma: args["output-sigma"],
    min: OUTPUT_MIN,
    max: args["output-max"],
  };
  const prompt: LengthDistribution = {
    median: args["prompt-median"],
    sigma: args["prompt-sigma"],
    min: PROMPT_MIN,
    max: Math.min(args["prompt-max"], target.contextLength - output.max - 1),
  };
  const arrivals = arrivalSchedule({
    seed: args.seed,
    ratePerS,
    maxRequests,
    durationS: args["duration-s"],
    promptTokens: prompt,
    outputTokens: output,
  });
  progress(`${arrivals.length} requests at ${round(ratePerS)}/s`);
  const pending: Promise<RequestOutcome>[] = [];
  let done = 0;
  let maxLagMs = 0;
  const t0 = performance.now();
  const ticker = setInterval(
    () => progress(`  ${round((performance.now() - t0) / 1000, 1)} s: sent ${pending.length}, answered ${done}`),
    2000,
  );
  try {
    for (const arrival of arrivals) {
      const wait = arrival.atMs - (performance.now() - t0);
      if (wait > 0) await sleep(wait);
      maxLagMs = Math.max(maxLagMs, performance.now() - t0 - arrival.atMs);
      const input: GenerateInput = {
        prompt: target.prompts.prompt(arrival),
        max_tokens: arrival.maxTokens,
        ...(args.drafter !== undefined && { drafter: args.drafter }),
        request_id: `load-${args.seed}-${arrival.index}`,
      };
      pending.push(
        send(target, input, args["timeout-s"] * 1000, t0).then((outcome) => {
          done++;
          return outcome;
        }),
      );
    }
    const outcomes = await Promise.all(pending);
    const objective: LatencyObjective = { ttftMs: args["ttft-slo-ms"], tpotMs: args["tpot-slo-ms"] };
    return {
      rate_per_s: round(ratePerS),
      summary: summarize(outcomes, objective),
      max_send_lag_ms: round(maxLagMs, 1),
    };
  } finally {
    clearInterval(ticker);
  }
}

function describe(run: LoadRun): string {
  const s = run.summary;
  return (
    `${run.rate_per_s}/s: completed ${s.completed}, shed ${s.shed} (${s.shed_with_retry_hint} with a retry hint), ` +
    `failed ${s.failed}; ttft p50 ${s.ttft_ms_p50} p99 ${s.ttft_ms_p99} ms; tpot p50 ${s.tpot_ms_p50} ` +
    `p99 ${s.tpot_ms_p99} ms; ${s.tokens_per_s} tokens/s; goodput ${s.goodput_rps}/s; ${s.concurrency} in flight`
  );
}

export interface LoadReport extends LoadSummary {
  readonly rate_per_s: number;
  readonly max_send_lag_ms: number;
  readonly sustainable_rps?: number;
  readonly search?: readonly (RateProbe & { readonly summary: LoadSummary })[];
  readonly objective: { readonly ttft_ms: number; readonly tpot_ms: number };
  readonly address: string;
  readonly model: string;
  readonly machine: ReturnType<typeof machineInfo>;
}

/** The whole run against a gateway: the optional rate search, then the measured run. */
export async function load(args: LoadArgs, address: string): Promise<LoadReport> {
  const loadAtStart = round(loadavg()[0], 2);
  const client = new SpecgateClient({ address, retry: { maxAttempts: 1 } });
  try {
    await client.waitForReady(10_000);
    const listing = await client.listModels();
    const model = listing.models[0];
    const served = await loadServedModel(model.name);
    const bos = served.model.bosTokenId === undefined ? [] : [served.model.bosTokenId];
    const target: Target = {
      client,
      prompts: new PromptSource((text) => served.tokenizer.encode(text, { bos: false }), bos),
      contextLength: model.context_length,
    };
    let rate = args.rate;
    let search: LoadReport["search"];
    let sustainable: number | undefined;
    if (args["find-rate"]) {
      const probes: (RateProbe & { summary: LoadSummary })[] = [];
      const found = await findSustainableRate(args.rate, args.probes, async (ratePerS) => {
        const run = await runSchedule(
          target,
          { ...args, "duration-s": args["probe-s"] },
          ratePerS,
          Number.MAX_SAFE_INTEGER,
        );
        const ok = sustained(run.summary, args.attainment);
        progress(`search: ${describe(run)}: ${ok ? "sustained" : "not sustained"}`);
        probes.push({ ratePerS: run.rate_per_s, sustained: ok, summary: run.summary });
        return ok;
      });
      if (found.ratePerS === 0) throw new Error(`no rate searched was sustained (lowest tried: ${args.rate}/s)`);
      sustainable = round(found.ratePerS);
      search = probes;
      rate = found.ratePerS * args.overload;
      progress(`sustainable rate ${sustainable}/s; measuring at ${args.overload}× it`);
    }
    const run = await runSchedule(target, args, rate, args.requests);
    progress(describe(run));
    return {
      ...run.summary,
      rate_per_s: run.rate_per_s,
      max_send_lag_ms: run.max_send_lag_ms,
      ...(sustainable !== undefined && { sustainable_rps: sustainable, search }),
      objective: { ttft_ms: args["ttft-slo-ms"], tpot_ms: args["tpot-slo-ms"] },
      address,
      model: model.name,
      machine: machineInfo(loadAtStart),
    };
  } finally {
    client.close();
  }
}

async function ownStack(args: LoadArgs): Promise<LocalStack> {
  progress(`starting a local stack (${args.pair}, ${args.replicas} target replica(s))`);
  const gateway = {
    maxInFlight: args["max-in-flight"],
    maxQueued: args["max-queued"],
    maxQueueMs: args["max-queue-ms"],
    kvBudgetBytes: args["kv-budget-bytes"],
  };
  return await startLocalStack({
    pair: args.pair,
    replicas: args.replicas,
    gatewayPort: 0,
    metricsPorts: "free",
    logLevel: "warn",
    gateway: Object.fromEntries(Object.entries(gateway).filter(([, value]) => value !== undefined)),
    log: (line) => process.stderr.write(`[stack] ${line}\n`),
  });
}

async function main(argv: readonly string[]): Promise<void> {
  const args = parseLoadArgs(argv);
  if (args.help) {
    process.stdout.write(`${loadHelp()}\n`);
    return;
  }
  const stack = args.address === undefined ? await ownStack(args) : undefined;
  try {
    const report = await load(args, args.address ?? (stack as LocalStack).gatewayAddress);
    if (!args.json) {
      process.stdout.write(
        `${report.model} at ${report.rate_per_s} requests/s (objective: ttft ≤ ${args["ttft-slo-ms"]} ms, tpot ≤ ${args["tpot-slo-ms"]} ms)\n`,
      );
      if (report.sustainable_rps !== undefined) process.stdout.write(`sustainable rate: ${report.sustainable_rps}/s\n`);
      process.stdout.write(`${JSON.stringify(report.failures)} failures\n`);
    }
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } finally {
    await stack?.stop();
  }
}

if (process.argv[1] === import.meta.filename) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`load: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
