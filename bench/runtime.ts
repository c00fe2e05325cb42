/**
 * `npm run bench:runtime [-- --json] [--model NAME] [--tokens N] [--repeats R] [--pairs P]`: figures of the model runtime on the
 * cost-scaled target: batch-1 greedy decode speed and step latency, the cost of scoring K+1 positions in one step
 * relative to one, batched decode throughput, the copy overhead of assembling batches, a prompt's prefill batched among
 * decode rows against the two run apart, and the same greedy decode run
 * by transformers.js on the same ONNX file. Progress goes to stderr; the last line of stdout is one JSON object.
 * Headline figures are medians over repeats; `*_spread` gives min/median and `*_best` the figures from the fastest
 * samples, which are what the machine itself costs when other processes share it.
 */
import { cpus, loadavg, totalmem } from "node:os";
import { basename, dirname } from "node:path";
import { parseArgs } from "node:util";
import {
  AutoModelForCausalLM,
  BaseStreamer,
  type TextStreamer,
  Tensor as TransformersTensor,
  env as transformersEnv,
} from "@huggingface/transformers";
import ort from "onnxruntime-node";
import { z } from "zod";
import { greedyDecode } from "../services/runtime/greedy.ts";
import { OnnxCausalLM } from "../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../services/runtime/tokenizer/load.ts";
import { round, spread } from "./stats.ts";

const argsSchema = z.object({
  json: z.boolean().default(false),
  model: z.string().min(1).default("stories260k-x110m"),
  prompt: z.string().default("Once upon a time, there was a little"),
  tokens: z.coerce.number().int().positive().default(96),
  repeats: z.coerce.number().int().positive().default(3),
  /** Decodes by each runtime, back to back in pairs: both run the same ORT kernels, so their gap is small next to noise. */
  pairs: z.coerce.number().int().positive().default(10),
});

const BATCH_SIZES = [1, 2, 4, 8, 16];
const VERIFY_POSITIONS = [1, 2, 4, 6, 8];
/** Cached context length under the verify-cost and batched measurements. */
const CONTEXT_TOKENS = 64;
const BATCHED_STEPS = 12;
const VERIFY_ROUNDS_PER_REPEAT = 5;

/**
 * The machine a benchmark ran on, with the 1-minute load average at its start and end: timings on a busy machine
 * spread widely (see the min/median pairs).
 */
export function machineInfo(loadAtStart: number) {
  const cpuList = cpus();
  return {
    cpus: cpuList.length,
    cpu_model: cpuList[0]?.model ?? "unknown",
    memory_gb: round(totalmem() / 2 ** 30, 1),
    load_average_1m_at_start: loadAtStart,
    load_average_1m_at_end: round(loadavg()[0], 2),
    node: process.version,
    onnxruntime_node: ort.env.versions.node,
  };
}

function progress(message: string): void {
  process.stderr.write(`[bench:runtime] ${message}\n`);
}

async function timed<T>(run: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await run();
  return { value, ms: performance.now() - started };
}

function contextTokens(prompt: readonly number[], length: number): number[] {
  return Array.from({ length }, (_, i) => prompt[i % prompt.length]);
}

async function verifyCostRatio(lm: OnnxCausalLM, prompt: readonly number[], rounds: number) {
  const sequenceId = "bench-verify";
  await lm.forward([{ sequenceId, tokens: contextTokens(prompt, CONTEXT_TOKENS) }]);
  const ms = new Map<number, number[]>(VERIFY_POSITIONS.map((k) => [k, []]));
  const ratios = new Map<number, number[]>(VERIFY_POSITIONS.map((k) => [k, []]));
  // Each round times every K back to back and yields ratios to its own K = 1, so that drifting machine load cancels;
  // truncation rolls the scored positions back as speculation does.
  for (let round = 0; round < rounds; round++) {
    const times = new Map<number, number>();
    for (const k of VERIFY_POSITIONS) {
      const { ms: elapsed } = await timed(() => lm.forward([{ sequenceId, tokens: contextTokens(prompt, k) }]));
      lm.truncate(sequenceId, CONTEXT_TOKENS);
      times.set(k, elapsed);
      ms.get(k)?.push(elapsed);
    }
    for (const k of VERIFY_POSITIONS) ratios.get(k)?.push((times.get(k) ?? 0) / (times.get(1) ?? 1));
  }
  lm.release(sequenceId);
  return {
    ratio: Object.fromEntries([...ratios].map(([k, values]) => [k, spread(values).median])),
    // Ratio of the fastest times: other processes only ever add time, so minima show the machine's own costs.
    bestRatio: Object.fromEntries(
      [...ms].map(([k, values]) => [k, round(Math.min(...values) / Math.min(...(ms.get(1) ?? [1])))]),
    ),
    ms: Object.fromEntries([...ms].map(([k, values]) => [k, spread(values)])),
  };
}

/**
 * Tokens/s of single-token decode steps over `batch` sequences of different context lengths (`context`, `context` − 2,
 * ...). With `churn`, one member of the batch changes every step (as when verify jobs of different users come and go),
 * so every step assembles its past by copying; without it, each step feeds the previous step's present tensors back
 * unchanged.
 */
export async function batchedDecode(
  lm: OnnxCausalLM,
  prompt: readonly number[],
  batch: number,
  churn: boolean,
  context = CONTEXT_TOKENS,
) {
  const ids = Array.from({ length: batch + (churn ? 1 : 0) }, (_, i) => `bench-batch-${i}`);
  await lm.forward(ids.map((sequenceId, i) => ({ sequenceId, tokens: contextTokens(prompt, context - 2 * i) })));
  const before = lm.stats();
  const stepMs: number[] = [];
  for (let step = 0; step < BATCHED_STEPS; step++) {
    const members = churn ? ids.filter((_, i) => i !== step % ids.length) : ids;
    const { ms } = await timed(() => lm.forward(members.map((sequenceId) => ({ sequenceId, tokens: [prompt[1]] }))));
    stepMs.push(ms);
  }
  const after = lm.stats();
  for (const id of ids) lm.release(id);
  const totalMs = stepMs.reduce((sum, ms) => sum + ms, 0);
  const steps = spread(stepMs);
  return {
    // From the median step, so that a step slowed by another process on the machine does not skew the figure.
    tokensPerS: (batch * 1000) / steps.median,
    bestTokensPerS: (batch * 1000) / steps.min,
    stepMs: steps,
    copyShare: (after.copyMs - before.copyMs) / totalMs,
    copiedBytesPerStep: (after.copiedBytes - before.copiedBytes) / BATCHED_STEPS,
  };
}

/** Decode rows of the prefill figure: a chain of K = 4 each, over `PREFILL_DECODE_CONTEXT` cached tokens. */
const PREFILL_DECODE_ROWS = 8;
const PREFILL_DECODE_CONTEXT = 40;
const PREFILL_PROMPT_TOKENS = 250;

/**
 * A new prompt's prefill arriving among decode rows, as a replica batches them: one forward holding both, against the
 * same work as two forwards (the decode rows, then the prompt). The runtime splits such a forward into runs of
 * similar lengths (batch-plan.ts planRuns), so the ratio stays near 1; padded into one run, every decode row would
 * score the prompt's 250 positions.
 */
async function prefillAmongDecode(lm: OnnxCausalLM, prompt: readonly number[], repeats: number) {
  const mixed: number[] = [];
  const apart: number[] = [];
  for (let r = 0; r < repeats; r++) {
    for (const together of r % 2 === 0 ? [true, false] : [false, true]) {
      const ids = Array.from({ length: PREFILL_DECODE_ROWS }, (_, i) => `bench-prefill-${r}-${together}-${i}`);
      const promptId = `bench-prefill-${r}-${together}-prompt`;
      await lm.forward(
        ids.map((sequenceId) => ({ sequenceId, tokens: contextTokens(prompt, PREFILL_DECODE_CONTEXT) })),
      );
      const decode = ids.map((sequenceId) => ({ sequenceId, tokens: prompt.slice(0, 5) }));
      const prefill = { sequenceId: promptId, tokens: contextTokens(prompt, PREFILL_PROMPT_TOKENS) };
      const { ms } = await timed(async () => {
        if (together) await lm.forward([...decode, prefill]);
        else {
          await lm.forward(decode);
          await lm.forward([prefill]);
        }
      });
      (together ? mixed : apart).push(ms);
      for (const id of [...ids, promptId]) lm.release(id);
    }
  }
  const mixedMs = spread(mixed);
  const apartMs = spread(apart);
  return {
    mixed_ms: mixedMs,
    apart_ms: apartMs,
    ratio: round(mixedMs.median / apartMs.median),
    ratio_best: round(mixedMs.min / apartMs.min),
  };
}

/** Wraps a session's run to sum the time spent inside it: the rest of a decode is the runtime's own JS work. */
function timeRuns(session: { run: (...args: never[]) => Promise<unknown> }): { ms: number } {
  const total = { ms: 0 };
  const run = session.run.bind(session);
  session.run = async (...args) => {
    const started = performance.now();
    try {
      return await run(...args);
    } finally {
      total.ms += performance.now() - started;
    }
  };
  return total;
}

/** Records when transformers.js hands over each step's tokens. */
class StepClock extends BaseStreamer {
  readonly marks: number[] = [];
  override put(): void {
    this.marks.push(performance.now());
  }
  override end(): void {}
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: "boolean" },
      model: { type: "string" },
      prompt: { type: "string" },
      tokens: { type: "string" },
      repeats: { type: "string" },
      pairs: { type: "string" },
    },
  });
  const parsed = argsSchema.safeParse(values);
  if (!parsed.success) throw new TypeError(z.prettifyError(parsed.error));
  const args = parsed.data;

  const loadAtStart = round(loadavg()[0], 2);
  progress(`loading ${args.model}`);
  const lm = await OnnxCausalLM.load(args.model);
  const tokenizer = await loadTokenizer(lm.files.dir);
  const prompt = [lm.info.bosTokenId, ...tokenizer.encode(args.prompt)];

  transformersEnv.allowRemoteModels = false;
  transformersEnv.localModelPath = `${dirname(lm.files.dir)}/`;
  const peer = await AutoModelForCausalLM.from_pretrained(basename(lm.files.dir), { dtype: "fp32", device: "cpu" });
  const peerInput = new TransformersTensor("int64", BigInt64Array.from(prompt, BigInt), [1, prompt.length]);
  const peerMask = new TransformersTensor("int64", new BigInt64Array(prompt.length).fill(1n), [1, prompt.length]);
  const peerRuns = timeRuns(peer.sessions.model);

  progress("warming up");
  await greedyDecode(lm, prompt, { maxTokens: 8 });
  await peer.generate({ input_ids: peerInput, attention_mask: peerMask, max_new_tokens: 8, do_sample: false });

  // Ours and theirs run in pairs, back to back, so that both see the same machine load.
  type Decode = { tokensPerS: number; stepMs: number[]; tokens: number[]; outsideRunMs: number };
  const ours: Decode[] = [];
  const theirs: Decode[] = [];
  const runOurs = async () => {
    const runMsBefore = lm.stats().runMs;
    const own = await timed(() => greedyDecode(lm, prompt, { maxTokens: args.tokens }));
    ours.push({
      tokensPerS: (own.value.tokens.length * 1000) / own.ms,
      stepMs: own.value.stepMs,
      tokens: own.value.tokens,
      outsideRunMs: own.ms - (lm.stats().runMs - runMsBefore),
    });
  };
  const runTheirs = async () => {
    // transformers.js hands every step's tokens to the streamer: the gaps between those calls are its step times.
    const streamer = new StepClock();
    const runMsBefore = peerRuns.ms;
    const { value, ms } = await timed(
      () =>
        peer.generate({
          input_ids: peerInput,
          attention_mask: peerMask,
          max_new_tokens: args.tokens,
          do_sample: false,
          // The typings ask for a TextStreamer, but generate() only calls put() and end().
          streamer: streamer as unknown as TextStreamer,
        }) as Promise<TransformersTensor>,
    );
    const tokens = (value.tolist() as bigint[][])[0].slice(prompt.length).map(Number);
    // marks[0] is the prompt, marks[1] the first token (after the prefill), then one mark per later step.
    const stepMs = streamer.marks.slice(2).map((mark, i) => mark - streamer.marks[i + 1]);
    theirs.push({
      tokensPerS: (tokens.length * 1000) / ms,
      stepMs,
      tokens,
      outsideRunMs: ms - (peerRuns.ms - runMsBefore),
    });
  };
  for (let r = 0; r < args.pairs; r++) {
    progress(`greedy decode of ${args.tokens} tokens by specgate and transformers.js, pair ${r + 1}/${args.pairs}`);
    // Alternating who goes first, so that neither always runs on caches the other warmed or cooled.
    for (const run of r % 2 === 0 ? [runOurs, runTheirs] : [runTheirs, runOurs]) await run();
  }
  await peer.dispose();

  progress("verify cost: K+1 positions in one step");
  const verify = await verifyCostRatio(lm, prompt, args.repeats * VERIFY_ROUNDS_PER_REPEAT);

  progress(`a ${PREFILL_PROMPT_TOKENS}-token prefill among ${PREFILL_DECODE_ROWS} decode rows`);
  const prefill = await prefillAmongDecode(lm, prompt, args.repeats);

  const batched: Record<number, number> = {};
  const batchedBest: Record<number, number> = {};
  const batchedDetail: Record<number, unknown> = {};
  for (const batch of BATCH_SIZES) {
    progress(`batched decode, batch ${batch}`);
    const steady = await batchedDecode(lm, prompt, batch, false);
    const churned = await batchedDecode(lm, prompt, batch, true);
    batched[batch] = round(steady.tokensPerS, 2);
    batchedBest[batch] = round(steady.bestTokensPerS, 2);
    batchedDetail[batch] = {
      step_ms: steady.stepMs,
      churn_tokens_per_s: round(churned.tokensPerS, 2),
      churn_step_ms: churned.stepMs,
      churn_copy_share_of_step: round(churned.copyShare),
      churn_copied_bytes_per_step: Math.round(churned.copiedBytesPerStep),
    };
  }
  await lm.close();

  const ourSpeed = spread(ours.map((run) => run.tokensPerS));
  // Each of our runs is paired with the transformers.js run beside it; the median pair ratio resists load drift.
  const pairRatios = spread(ours.map((run, i) => run.tokensPerS / theirs[i].tokensPerS));
  const theirSpeed = spread(theirs.map((run) => run.tokensPerS));
  const stepMs = spread(ours.flatMap((run) => run.stepMs));
  const theirStepMs = spread(theirs.flatMap((run) => run.stepMs));
  const result = {
    model: args.model,
    prompt: args.prompt,
    prompt_tokens: prompt.length,
    generated_tokens: ours[0].tokens.length,
    repeats: args.repeats,
    target_tokens_per_s: ourSpeed.median,
    target_tokens_per_s_spread: ourSpeed,
    target_step_ms: stepMs.median,
    target_step_ms_spread: stepMs,
    verify_cost_ratio: verify.ratio,
    verify_cost_ratio_best: verify.bestRatio,
    verify_step_ms: verify.ms,
    verify_context_tokens: CONTEXT_TOKENS,
    batched_tokens_per_s: batched,
    batched_tokens_per_s_best: batchedBest,
    batched_detail: batchedDetail,
    prefill_among_decode: {
      definition: `one forward of ${PREFILL_DECODE_ROWS} decode rows (5 tokens each over ${PREFILL_DECODE_CONTEXT} cached) and a ${PREFILL_PROMPT_TOKENS}-token prompt, against the same as two forwards; ratio of medians, and of the fastest (ratio_best)`,
      ...prefill,
    },
    transformersjs_tokens_per_s: theirSpeed.median,
    transformersjs_tokens_per_s_spread: theirSpeed,
    ratio_vs_transformersjs: pairRatios.median,
    ratio_vs_transformersjs_pairs: pairRatios,
    transformersjs_step_ms: theirStepMs.median,
    transformersjs_step_ms_spread: theirStepMs,
    // Fastest decode step theirs / ours: the comparison least disturbed by other processes on the machine.
    ratio_vs_transformersjs_best_step: round(theirStepMs.min / stepMs.min),
    decode_pairs: args.pairs,
    // Per generated token, the time each runtime spends outside session.run (its own JS work around the same kernels).
    outside_run_ms_per_token: {
      specgate: spread(ours.map((run) => run.outsideRunMs / run.tokens.length)).median,
      transformersjs: spread(theirs.map((run) => run.outsideRunMs / run.tokens.length)).median,
    },
    identical_tokens: theirs.every((run) => run.tokens.join() === ours[0].tokens.join()),
    machine: machineInfo(loadAtStart),
  };
  if (!args.json) {
    console.log(
      `${args.model}: ${result.target_tokens_per_s} tokens/s greedy (step ${result.target_step_ms} ms median)`,
    );
    console.log(
      `transformers.js: ${result.transformersjs_tokens_per_s} tokens/s, ratio ${result.ratio_vs_transformersjs}`,
    );
    console.log(`verify cost ratio: ${JSON.stringify(result.verify_cost_ratio)}`);
    console.log(`batched tokens/s: ${JSON.stringify(result.batched_tokens_per_s)}`);
  }
  console.log(JSON.stringify(result));
}

// Run as a script; other benchmarks import batchedDecode (the batched-forward ceiling) without running this one.
if (process.argv[1] === import.meta.filename) {
  main().catch((error: unknown) => {
    console.error(`bench:runtime: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  });
}
