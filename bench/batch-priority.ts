/**
 * `npm run bench:batch [-- --json]`: does a running batch starve interactive requests? Brings up a local stack (its
 * own redis-server, draft service, one replica, the gateway with its batch worker), then measures the same
 * interactive workload (`--streams` concurrent streams, `--requests` requests each phase) alternately with no batch
 * and while a batch of `--batch-items` runs, `--repeats` times each, side by side in one run. Prints interactive
 * time to first token and total latency p50/p99 per condition, their ratios, and the batch items finished meanwhile.
 */
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { z } from "zod";
import { MODEL_PAIRS, type ModelPair, startLocalStack } from "../deploy/local-stack.ts";
import { SpecgateClient } from "../sdk/index.ts";
import { storyPrompts } from "./prompts.ts";
import { machineInfo } from "./runtime.ts";
import { quantile, round } from "./stats.ts";

const count = z.coerce.number().int().positive();
const ARGS = z.object({
  pair: z.enum(Object.keys(MODEL_PAIRS) as [ModelPair, ...ModelPair[]]).default("stories260k"),
  streams: count.default(2),
  requests: count.default(16),
  repeats: count.default(2),
  "max-tokens": count.default(32),
  "batch-items": count.default(400),
  "batch-concurrency": z.coerce.number().int().min(1).default(1),
  json: z.boolean().default(false),
});

interface Timing {
  readonly ttftMs: number;
  readonly totalMs: number;
}

function progress(message: string): void {
  process.stderr.write(`[bench:batch] ${message}\n`);
}

/** `requests` streamed requests over `streams` concurrent streams. */
async function interactive(client: SpecgateClient, prompts: readonly string[], args: z.infer<typeof ARGS>) {
  const timings: Timing[] = [];
  let next = 0;
  const stream = async () => {
    while (next < args.requests) {
      const prompt = prompts[next++ % prompts.length];
      const start = performance.now();
      let first: number | undefined;
      for await (const event of client.stream({ prompt, max_tokens: args["max-tokens"], tenant_id: "interactive" })) {
        if (event.type === "delta") first ??= performance.now();
      }
      timings.push({ ttftMs: (first ?? performance.now()) - start, totalMs: performance.now() - start });
    }
  };
  await Promise.all(Array.from({ length: args.streams }, stream));
  return timings;
}

function summary(timings: readonly Timing[]) {
  const of = (pick: (t: Timing) => number, q: number) => round(quantile(timings.map(pick), q), 1);
  return {
    requests: timings.length,
    ttft_ms_p50: of((t) => t.ttftMs, 0.5),
    ttft_ms_p99: of((t) => t.ttftMs, 0.99),
    latency_ms_p50: of((t) => t.totalMs, 0.5),
    latency_ms_p99: of((t) => t.totalMs, 0.99),
  };
}

async function main(argv: readonly string[]): Promise<void> {
  const { values } = parseArgs({
    args: [...argv],
    options: Object.fromEntries(
      Object.keys(ARGS.shape).map((name) => [name, { type: name === "json" ? "boolean" : "string" }]),
    ) as Record<string, { type: "string" | "boolean" }>,
  });
  const args = ARGS.parse(values);
  const loadAtStart = round(loadavg()[0], 2);
  const stack = await startLocalStack({
    pair: args.pair,
    gatewayPort: 0,
    httpPort: "off",
    metricsPorts: "free",
    logLevel: "warn",
    env: { ...process.env, SPECGATE_BATCH_CONCURRENCY: String(args["batch-concurrency"]) },
    log: (line) => progress(`[stack] ${line}`),
  });
  const client = new SpecgateClient({ address: stack.gatewayAddress });
  try {
    const prompts = storyPrompts(8);
    progress("warming up");
    await interactive(client, prompts, { ...args, requests: args.streams * 2 });
    const without: Timing[] = [];
    const during: Timing[] = [];
    let batchItemsDone = 0;
    let batchSeconds = 0;
    for (let repeat = 1; repeat <= args.repeats; repeat++) {
      progress(`repeat ${repeat}/${args.repeats}: no batch`);
      without.push(...(await interactive(client, prompts, args)));
      progress(`repeat ${repeat}/${args.repeats}: a batch of ${args["batch-items"]} items running`);
      const items = Array.from({ length: args["batch-items"] }, (_, i) => ({
        prompt: prompts[i % prompts.length],
        max_tokens: args["max-tokens"],
      }));
      const batch = await client.submitBatch(items, { tenant_id: "batch" });
      const running = async () => (await client.getBatch(batch.id, { tenant_id: "batch" })).counts?.completed ?? 0;
      while ((await running()) === 0) await new Promise((resolve) => setTimeout(resolve, 50));
      const start = performance.now();
      const doneBefore = await running();
      during.push(...(await interactive(client, prompts, args)));
      const cancelled = await client.cancelBatch(batch.id, { tenant_id: "batch" });
      batchSeconds += (performance.now() - start) / 1000;
      batchItemsDone += (cancelled.counts?.completed ?? 0) - doneBefore;
      if (cancelled.status !== "BATCH_STATUS_CANCELLED") {
        throw new Error(`the batch ended (${cancelled.status}) before the interactive phase did: raise --batch-items`);
      }
    }
    const a = summary(without);
    const b = summary(during);
    const result = {
      bench: "batch-priority",
      pair: args.pair,
      streams: args.streams,
      max_tokens: args["max-tokens"],
      batch_concurrency: args["batch-concurrency"],
      without_batch: a,
      with_batch: b,
      ratio_ttft_p50: round(b.ttft_ms_p50 / a.ttft_ms_p50, 2),
      ratio_ttft_p99: round(b.ttft_ms_p99 / a.ttft_ms_p99, 2),
      ratio_latency_p50: round(b.latency_ms_p50 / a.latency_ms_p50, 2),
      ratio_latency_p99: round(b.latency_ms_p99 / a.latency_ms_p99, 2),
      batch_items_per_s_during: round(batchItemsDone / batchSeconds, 2),
      machine: machineInfo(loadAtStart),
    };
    if (!args.json) {
      console.log(`interactive, no batch:      ${JSON.stringify(a)}`);
      console.log(`interactive, batch running: ${JSON.stringify(b)}`);
      console.log(
        `ratios (with / without): ttft p50 ${result.ratio_ttft_p50}, p99 ${result.ratio_ttft_p99}; latency p50 ${result.ratio_latency_p50}, p99 ${result.ratio_latency_p99}; batch ${result.batch_items_per_s_during} items/s meanwhile`,
      );
    }
    console.log(JSON.stringify(result));
  } finally {
    client.close();
    await stack.stop();
  }
}

await main(process.argv.slice(2));
