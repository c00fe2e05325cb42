/**
 * `npm run bench:drafts [-- --texts N --length L --rounds R]`: figures of the draft variants of stories260K.
 * - Greedy next-token agreement of each draft with the exact model on teacher-forced text (stories sampled from the
 *   exact model at temperature 1): the per-token acceptance rate α of greedy speculation.
 * - Decode step time (batch 1, one token with a KV cache) of int4 weights run as com.microsoft.MatMulNBits against
 *   the same values stored as float32 (plain MatMul), at stories260K size and at the ~11M cost-scaled size.
 * - Step time of every built model relative to the cost-scaled target (the cost ratio c of each draft).
 * Progress goes to stderr; the last line of stdout is one JSON object.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { costScale } from "../services/model-builder/cost-scale.ts";
import { earlyExit, type LlamaWeights } from "../services/model-builder/llama-weights.ts";
import { readLlama2c } from "../services/model-builder/llama2c.ts";
import { writeModelDir } from "../services/model-builder/model-dir.ts";
import { DRAFT_11M, defaultSourceDir, RECIPES, SOURCE_CHECKPOINT } from "../services/model-builder/models-build.ts";
import { type QuantizeOptions, quantizeWeights } from "../services/model-builder/quantize.ts";
import { uniform } from "../services/model-builder/random-llama.ts";
import { argmax, greedyDecode } from "../services/runtime/greedy.ts";
import { MODELS_ROOT } from "../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../services/runtime/onnx-causal-lm.ts";
import { quantile, round } from "./stats.ts";

const { values: args } = parseArgs({
  options: {
    texts: { type: "string", default: "16" },
    length: { type: "string", default: "200" },
    rounds: { type: "string", default: "9" },
    steps: { type: "string", default: "24" },
  },
});
const TEXTS = Number(args.texts);
const LENGTH = Number(args.length);
const ROUNDS = Number(args.rounds);
const STEPS = Number(args.steps);

const log = (line: string) => process.stderr.write(`bench:drafts: ${line}\n`);

/** Stories sampled from the exact model at temperature 1, each starting with BOS. */
async function sampleTexts(lm: OnnxCausalLM): Promise<number[][]> {
  const next = uniform(2024);
  const v = lm.info.vocabSize;
  const texts: number[][] = [];
  for (let t = 0; t < TEXTS; t++) {
    const id = `text-${t}`;
    const tokens = [lm.info.bosTokenId];
    let input = tokens.slice();
    while (tokens.length < LENGTH) {
      const [logits] = await lm.forward([{ sequenceId: id, tokens: input }]);
      const row = logits.subarray((input.length - 1) * v, input.length * v);
      const max = row[argmax(row)];
      const weights = Array.from(row, (x) => Math.exp(x - max));
      let u = next() * weights.reduce((a, b) => a + b, 0);
      let token = 0;
      while (token < v - 1 && u >= weights[token]) u -= weights[token++];
      tokens.push(token);
      input = [token];
    }
    lm.release(id);
    texts.push(tokens);
  }
  return texts;
}

/** Argmax of every position of every text, read from one teacher-forced forward per text. */
async function greedyChoices(lm: OnnxCausalLM, texts: readonly number[][]): Promise<number[][]> {
  const v = lm.info.vocabSize;
  const out: number[][] = [];
  for (const [i, text] of texts.entries()) {
    const [logits] = await lm.forward([{ sequenceId: `tf-${i}`, tokens: text }]);
    lm.release(`tf-${i}`);
    out.push(text.map((_, p) => argmax(logits, p * v, v)));
  }
  return out;
}

function agreement(a: readonly number[][], b: readonly number[][]): number {
  let same = 0;
  let total = 0;
  a.forEach((row, i) => {
    row.forEach((x, p) => {
      same += x === b[i][p] ? 1 : 0;
      total++;
    });
  });
  return same / total;
}

interface StepTime {
  readonly median: number;
  readonly min: number;
}

/**
 * Ms of one batch-1 decode step: each round decodes STEPS tokens with every model in turn (so load from other
 * processes hits all alike) and keeps each model's median step; reported are the median and min over rounds.
 */
async function stepTimes(dirs: Record<string, string>, rounds: number): Promise<Record<string, StepTime>> {
  const models = Object.fromEntries(
    await Promise.all(Object.entries(dirs).map(async ([name, dir]) => [name, await OnnxCausalLM.load(dir)] as const)),
  );
  const samples: Record<string, number[]> = Object.fromEntries(Object.keys(dirs).map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    for (const [name, lm] of Object.entries(models)) {
      const { stepMs } = await greedyDecode(lm, [lm.info.bosTokenId], { maxTokens: STEPS + 1, stopAtEos: false });
      samples[name].push(quantile(stepMs, 0.5));
    }
  }
  await Promise.all(Object.values(models).map((lm) => lm.close()));
  return Object.fromEntries(
    Object.entries(samples).map(([n, xs]) => [
      n,
      { median: round(quantile(xs, 0.5), 4), min: round(Math.min(...xs), 4) },
    ]),
  );
}

async function main(): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), "bench-drafts-"));
  try {
    const exact = (await readLlama2c(join(defaultSourceDir(), SOURCE_CHECKPOINT))).weights;
    const write = async (name: string, weights: LlamaWeights) => {
      const dir = join(scratch, name);
      await writeModelDir(dir, weights, { variant: name, source: SOURCE_CHECKPOINT, realVocabSize: 512 });
      return dir;
    };
    const quantized = (o: QuantizeOptions) => quantizeWeights(exact, o);
    const variants: Record<string, LlamaWeights> = {
      "int4-g32": quantized({ bits: 4, groupSize: 32, format: "dequantized" }),
      "int4-g64": quantized({ bits: 4, groupSize: 64, format: "dequantized" }),
      "int8-g32": quantized({ bits: 8, groupSize: 32, format: "dequantized" }),
      ...Object.fromEntries([1, 2, 3, 4].map((k) => [`exit${k}`, earlyExit(exact, k)])),
    };

    log(`sampling ${TEXTS} texts of ${LENGTH} tokens from the exact model`);
    const reference = await OnnxCausalLM.load(await write("exact", exact));
    const texts = await sampleTexts(reference);
    const expected = await greedyChoices(reference, texts);
    await reference.close();
    const agreementRates: Record<string, number> = {};
    for (const [name, weights] of Object.entries(variants)) {
      const lm = await OnnxCausalLM.load(await write(name, weights));
      agreementRates[name] = round(agreement(expected, await greedyChoices(lm, texts)), 4);
      await lm.close();
      log(`agreement ${name}: ${agreementRates[name]}`);
    }

    log("timing int4 as MatMulNBits against dequantized float32");
    const int4Formats: Record<string, string> = {};
    for (const groupSize of [32, 64]) {
      for (const format of ["matmul-nbits", "dequantized"] as const) {
        int4Formats[`g${groupSize}-${format}`] = await write(
          `q${groupSize}-${format}`,
          quantized({ bits: 4, groupSize, format }),
        );
      }
    }
    const padded = costScale(variants["int4-g32"], DRAFT_11M);
    int4Formats["x11m-g32-dequantized"] = await write("x11m-dequantized", padded);
    int4Formats["x11m-g32-matmul-nbits"] = await write(
      "x11m-nbits",
      quantizeWeights(padded, { bits: 4, groupSize: 32, format: "matmul-nbits" }),
    );
    const int4Ms = await stepTimes(int4Formats, 4 * ROUNDS);
    log(`int4 step ms: ${JSON.stringify(int4Ms)}`);

    log("timing the built models against the cost-scaled target");
    const built = Object.fromEntries(RECIPES.map((r) => [r.name, join(MODELS_ROOT, r.name)]));
    const builtMs = await stepTimes(built, ROUNDS);
    const target = builtMs["stories260k-x110m"].median;
    const ratio = (a: string, b: string) => round(int4Ms[a].median / int4Ms[b].median, 3);
    const result = {
      texts: TEXTS,
      text_length: LENGTH,
      agreement: agreementRates,
      int4_step_ms: int4Ms,
      nbits_over_dequantized: {
        g32: ratio("g32-matmul-nbits", "g32-dequantized"),
        g64: ratio("g64-matmul-nbits", "g64-dequantized"),
        x11m_g32: ratio("x11m-g32-matmul-nbits", "x11m-g32-dequantized"),
      },
      step_ms: builtMs,
      cost_vs_target: Object.fromEntries(Object.entries(builtMs).map(([n, ms]) => [n, round(ms.median / target, 3)])),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

await main();
