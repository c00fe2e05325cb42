/**
 * In-process speculative decoding benchmark (`npm run bench -- --mode inproc [--json] [--prompts N] [--tokens N]
 * [--repeats R] [--drafters int4,ngram,...] [--k K] [--k-max K] [--draft-threads N|auto] [--target-threads N] [--target NAME]
 * [--sweep-drafter NAME|none] [--sweep-k 1,2,4,8] [--sweep-tree-nodes 8,16,32] [--lookahead W,N,G|none]
 * [--sweep-lookahead "W,N,G;W,N,G"]`).
 *
 * On the cost-scaled target, for each drafter (`medusa`: the target's own heads, run on its `-medusa` build) and for fixed and adaptive K, in the same run and on the same prompts
 * as target-only greedy decoding: acceptance α, mean accepted per round, c (draft step / target step), the measured
 * speedup S, the ideal S* from the run's own measured model costs, efficiency S/S*, and a per-phase breakdown of where
 * decode time goes, and S* priced at each model's 10th-percentile step cost (`ideal_speedup_quiet`: the same rounds on
 * an undisturbed machine). Runs are interleaved prompt by prompt so that drifting machine load hits every configuration
 * alike, and repeated: for each (prompt, configuration) the fastest run counts, the one least disturbed by other work
 * on a shared machine. Decode time excludes the prompt's prefill (the same forward with or without speculation).
 * Lookahead decoding (no drafter: the target drafts for itself in its own forward) runs beside the drafters as
 * `lookahead`, with S and S* for each (W, N, G) of the Lookahead sweep.
 */
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { z } from "zod";
import type { Drafter } from "../services/engine/drafter.ts";
import { type GenerationResult, generate, type Lookahead, type Speculation } from "../services/engine/generate.ts";
import { CostModel, type KPolicyConfig } from "../services/engine/k-policy.ts";
import {
  DEFAULT_LOOKAHEAD,
  type LookaheadConfig,
  LookaheadSwitch,
  lookaheadConfig,
} from "../services/engine/lookahead.ts";
import { MedusaDrafter } from "../services/engine/medusa-drafter.ts";
import { ModelDrafter } from "../services/engine/model-drafter.ts";
import { NgramDrafter } from "../services/engine/ngram-drafter.ts";
import { aggregateStats, type SpeculationStats } from "../services/engine/stats.ts";
import { TreePolicy } from "../services/engine/tree-policy.ts";
import { EXTERNAL_DATA_FILE } from "../services/model-builder/model-dir.ts";
import { type CausalLM, type ForwardRequest, isMedusaLM } from "../services/runtime/causal-lm.ts";
import { MODELS_ROOT, resolveModel } from "../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../services/runtime/tokenizer/load.ts";
import type { BenchReport } from "./cli.ts";
import { Progress } from "./progress.ts";
import { storyPrompts } from "./prompts.ts";
import { mean, pairedRatio, quantile, round, sum } from "./stats.ts";

/** Drafters the benchmark knows: name → model directory (none for the n-gram drafter). */
export const DRAFTER_MODELS: Record<string, string | undefined> = {
  /** stories260K with 4-bit weights: the headline pair's draft. */
  int4: "stories260k-int4",
  /** The int4 weights padded to ~11M parameters: a draft with a realistic cost (~1/10 of the target's). */
  "int4-x11m": "stories260k-int4-x11m",
  /** Self-speculative: the first 3 of the cost-scaled target's layers (its true cost). */
  "early-exit": "stories260k-x110m-exit3",
  /** The first 4 of stories260K's 5 layers, unpadded (cheap, like the int4 draft). */
  "early-exit-4": "stories260k-exit4",
  ngram: undefined,
  medusa: undefined,
  "medusa-own": undefined,
};

/**
 * Drafters that are the target's own Medusa heads (sharing its classifier, or with projections of their own): their
 * configurations run the target's `-medusa` (`-medusa-own`) build, heads computed in every verify forward so that
 * their cost is in the figures, against the plain target's target-only decoding. Skipped, with a note, when that
 * build is missing (`npm run train:medusa`).
 */
const isMedusa = (drafter: string) => drafter.startsWith("medusa");

const argsSchema = z.object({
  target: z.string().default("stories260k-x110m"),
  prompts: z.coerce.number().int().positive().default(6),
  /** Runs of every (prompt, configuration); the fastest counts (least disturbed by other work on the machine). */
  repeats: z.coerce.number().int().positive().default(3),
  tokens: z.coerce.number().int().positive().default(64),
  drafters: z.string().default(Object.keys(DRAFTER_MODELS).join(",")),
  k: z.coerce.number().int().nonnegative().default(4),
  "k-max": z.coerce.number().int().positive().default(12),
  /**
   * The tree variant of each drafter (`<drafter>/tree`): adaptive depth, and each round the chain or a tree of at most
   * this many children per node and nodes, whichever the tree policy expects to give more tokens per ms.
   */
  "tree-width": z.coerce.number().int().positive().default(3),
  "tree-nodes": z.coerce.number().int().positive().default(16),
  /**
   * What branching buys at a generous size: `<drafter>/deep-chain` (fixed K at this depth) beside `<drafter>/deep-tree`
   * (a fixed tree this deep, `tree-width` children per node, `deep-tree-nodes` nodes); 0 leaves both out.
   */
  "deep-tree-depth": z.coerce.number().int().nonnegative().default(6),
  "deep-tree-nodes": z.coerce.number().int().positive().default(32),
  /**
   * S and S* by K and by tree size for one drafter ("none": no sweep): fixed K at each of `sweep-k`, and fixed trees
   * of `tree-width` children per node, K deep, at each of `sweep-tree-nodes` nodes.
   */
  "sweep-drafter": z.string().default("int4"),
  "sweep-k": z.string().default("1,2,4,8"),
  "sweep-tree-nodes": z.string().default("8,16,32"),
  /** Lookahead decoding's (W, N, G), "none" to leave Lookahead out. */
  lookahead: z
    .string()
    .default(`${DEFAULT_LOOKAHEAD.window},${DEFAULT_LOOKAHEAD.ngram},${DEFAULT_LOOKAHEAD.candidates}`),
  /** S and S* of Lookahead at each (W, N, G), separated by semicolons ("" for none). */
  "sweep-lookahead": z.string().default("2,2,2;2,3,2;4,3,4;3,4,3;7,5,7"),
  /** Intra-op threads of the target (0: all cores). */
  "target-threads": z.coerce.number().int().nonnegative().default(0),
  /**
   * Intra-op threads of draft models; "auto": 1 for drafts under 16 MB (so small a model only loses to thread
   * hand-offs), all cores for larger ones.
   */
  "draft-threads": z.union([z.literal("auto"), z.coerce.number().int().nonnegative()]).default("auto"),
});

function parseOptions(argv: readonly string[]) {
  const raw: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const [name, inline] = argv[i].replace(/^--/, "").split("=", 2);
    raw[name] = inline ?? argv[++i];
  }
  return argsSchema.parse(raw);
}

/** Bytes of a model's graph and external weights. */
function modelBytes(name: string): number {
  const { onnxPath } = resolveModel(name);
  const data = join(dirname(onnxPath), EXTERNAL_DATA_FILE);
  return statSync(onnxPath).size + (existsSync(data) ? statSync(data).size : 0);
}

function progress(message: string): void {
  process.stderr.write(`[bench:inproc] ${message}\n`);
}

/** A CausalLM that logs each forward's duration and number of positions (the benchmark's model-cost probe). */
class TimedModel implements CausalLM {
  log: { positions: number; ms: number }[] = [];
  constructor(private readonly inner: CausalLM) {}
  get info() {
    return this.inner.info;
  }
  async forward(batch: readonly ForwardRequest[]): Promise<Float32Array[]> {
    const started = performance.now();
    const logits = await this.inner.forward(batch);
    this.log.push({ positions: batch.reduce((s, r) => s + r.tokens.length, 0), ms: performance.now() - started });
    return logits;
  }
  sequenceLength(id: string) {
    return this.inner.sequenceLength(id);
  }
  truncate(id: string, length: number) {
    this.inner.truncate(id, length);
  }
  compact(id: string, start: number, kept: readonly number[]) {
    this.inner.compact(id, start, kept);
  }
  release(id: string) {
    this.inner.release(id);
  }
  cacheBytes(id?: string) {
    return this.inner.cacheBytes(id);
  }
  close() {
    return this.inner.close();
  }
  /** Takes the log of one request, without its first forward (the prompt's prefill, which generate runs first). */
  takeDecodeLog(): { positions: number; ms: number }[] {
    const [, ...decode] = this.log;
    this.log = [];
    return decode;
  }
}

type Run = Awaited<ReturnType<typeof runOne>>;

/** One configuration's runs: per prompt, every repeat. */
type Runs = Run[][];

/** A configuration's measurements over all prompts, from the fastest run of each prompt. */
interface Measured {
  tokens: number[][];
  decodeMs: number;
  stats: SpeculationStats;
  targetForwards: { positions: number; ms: number }[];
  draftForwards: { positions: number; ms: number }[];
  /** Tokens of every run: per prompt, per repeat. */
  allTokens: number[][][];
}

function fastest(runs: Runs): Measured {
  const chosen = runs.map((repeats) => repeats.reduce((a, b) => (b.decodeMs < a.decodeMs ? b : a)));
  return {
    tokens: chosen.map((r) => r.result.tokens),
    decodeMs: sum(chosen.map((r) => r.decodeMs)),
    stats: aggregateStats(chosen.map((r) => r.result.stats)),
    targetForwards: chosen.flatMap((r) => r.target),
    draftForwards: chosen.flatMap((r) => r.draft),
    allTokens: runs.map((repeats) => repeats.map((r) => r.result.tokens)),
  };
}

interface Config {
  readonly name: string;
  readonly drafterName: string;
  /** The model verifying (and, for Medusa, drafting); the benchmark's target when absent. */
  readonly target?: TimedModel;
  /** "sweep": one point of the K, tree-size or Lookahead sweep. */
  readonly policy: "fixed" | "adaptive" | "tree" | "tree-flat" | "deep-chain" | "deep-tree" | "sweep" | "lookahead";
  readonly speculation?: Speculation;
  readonly lookahead?: Lookahead;
  readonly draftModel: TimedModel | undefined;
  readonly runs: Runs;
}

async function runOne(
  target: TimedModel,
  prompt: number[],
  tokens: number,
  config: Pick<Config, "speculation" | "lookahead" | "draftModel"> | undefined,
): Promise<{
  result: GenerationResult;
  decodeMs: number;
  target: Measured["targetForwards"];
  draft: Measured["draftForwards"];
}> {
  const draftModel = config?.draftModel;
  target.log = [];
  if (draftModel) draftModel.log = [];
  const started = performance.now();
  const result = await generate(target, prompt, {
    maxNewTokens: tokens,
    speculation: config?.speculation,
    lookahead: config?.lookahead,
  });
  const totalMs = performance.now() - started;
  return {
    result,
    decodeMs: totalMs - result.stats.prefill_time_ms,
    target: target.takeDecodeLog(),
    draft: draftModel ? draftModel.takeDecodeLog() : [],
  };
}

/** The q-quantile of a list (0 for an empty one). */
/** A statistic of the forward times per number of positions scored. */
function costCurve(
  forwards: readonly { positions: number; ms: number }[],
  statistic: (ms: number[]) => number,
): Map<number, number> {
  const byPositions = new Map<number, number[]>();
  for (const f of forwards) {
    const list = byPositions.get(f.positions);
    if (list) list.push(f.ms);
    else byPositions.set(f.positions, [f.ms]);
  }
  return new Map([...byPositions].sort((a, b) => a[0] - b[0]).map(([n, ms]) => [n, statistic(ms)]));
}

/** Low-percentile forward time: the cost of a step that other work on the machine did not disturb. */
const QUIET = 0.1;

/**
 * The algorithm's limit on this machine, S*: target-only decoding of the generated tokens at the measured target step
 * cost, against the run's own model time (verify forwards + draft steps), with everything else (bookkeeping,
 * sampling, copies, transport) free.
 */
export function idealSpeedup(generatedTokens: number, targetStepMs: number, verifyMs: number, draftMs: number): number {
  return (generatedTokens * targetStepMs) / (verifyMs + draftMs);
}

/**
 * A projection, not a measurement: S* where a verify forward costs one target step whatever the positions it scores
 * (up to 64: the batch-1 GPU case), from the run's own acceptance (tokens per verify) and draft time.
 */
export function flatVerifyProjection(
  generatedTokens: number,
  verifies: number,
  targetStepMs: number,
  draftMs: number,
): number {
  return (generatedTokens * targetStepMs) / (verifies * targetStepMs + draftMs);
}

export const FLAT_VERIFY_DEFINITION =
  "projection, not measured: the ideal speedup if verifying up to 64 positions cost what one does (batch-1 GPU), from this run's measured tokens per round and draft time: tokens x target step / (verify forwards x target step + draft time)";

function figures(config: Config, baseline: Measured, targetStepMs: number, quietTargetStepMs: number) {
  const m = fastest(config.runs);
  const { stats } = m;
  const verifyForwardMs = sum(m.targetForwards.map((f) => f.ms));
  const draftForwardMs = sum(m.draftForwards.map((f) => f.ms));
  const draftStepMs = mean(m.draftForwards.map((f) => f.ms));
  const generated = sum(m.tokens.map((t) => t.length));
  const speedup = baseline.decodeMs / m.decodeMs;
  const ideal = idealSpeedup(generated, targetStepMs, verifyForwardMs, draftForwardMs);
  const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, j) => x === b[j]);
  // Every repeat of every prompt, not only the fastest one.
  const identical = m.allTokens.every((repeats, i) => repeats.every((t) => same(t, baseline.tokens[i])));
  const curve = costCurve(m.targetForwards, mean);
  // The same rounds priced at undisturbed model costs: what this drafter and policy give on a quiet machine.
  const quietVerify = costCurve(m.targetForwards, (ms) => quantile(ms, QUIET));
  const quietModelMs =
    sum(m.targetForwards.map((f) => quietVerify.get(f.positions) ?? 0)) +
    (m.draftForwards.length === 0
      ? 0
      : m.draftForwards.length *
        quantile(
          m.draftForwards.map((f) => f.ms),
          QUIET,
        ));
  return {
    alpha: round(stats.alpha),
    alpha_per_token: round(stats.alpha_per_token),
    mean_accepted_per_round: round(stats.mean_accepted_per_round),
    tokens_per_round: round(stats.tokens_per_round),
    c: round(draftStepMs / targetStepMs, 4),
    speedup: round(speedup),
    ideal_speedup: round(ideal),
    efficiency: round(speedup / ideal),
    ideal_speedup_quiet: round(idealSpeedup(generated, quietTargetStepMs, quietModelMs, 0)),
    projected_speedup_flat_verify: round(
      flatVerifyProjection(generated, m.targetForwards.length, targetStepMs, draftForwardMs),
    ),
    identical_output: identical,
    policy: config.policy,
    mean_k: round(stats.draft_tokens / Math.max(1, stats.rounds), 2),
    /** Draft tokens (tree nodes) the target scored per round: K for a chain that got its full draft. */
    nodes_per_round: round(stats.draft_tokens / Math.max(1, stats.rounds), 2),
    k_histogram: stats.k_histogram,
    acceptance_per_position: stats.acceptance_per_position.map((a) => round(a)),
    draft_step_ms: round(draftStepMs),
    verify_cost_ratio: Object.fromEntries([...curve].map(([n, ms]) => [n, round(ms / targetStepMs)])),
    /** The same at each size's 10th-percentile forward time against target-only's: the machine's own cost curve. */
    verify_cost_ratio_quiet: Object.fromEntries([...quietVerify].map(([n, ms]) => [n, round(ms / quietTargetStepMs)])),
    tokens_per_s: round((generated / m.decodeMs) * 1000, 1),
    breakdown_ms: {
      decode: round(m.decodeMs, 1),
      verify_forward: round(verifyForwardMs, 1),
      verify_other: round(stats.verify_time_ms - verifyForwardMs, 1),
      draft_forward: round(draftForwardMs, 1),
      draft_other: round(stats.draft_time_ms - draftForwardMs, 1),
      loop_other: round(m.decodeMs - stats.verify_time_ms - stats.draft_time_ms, 1),
    },
  };
}

function sweepList(list: string): number[] {
  return list
    .split(",")
    .filter((v) => v.length > 0)
    .map((v) => z.coerce.number().int().positive().parse(v));
}

/** Parses "W,N,G" into a Lookahead configuration. */
function lookaheadOption(value: string): LookaheadConfig {
  const [window, ngram, candidates] = sweepList(value);
  return lookaheadConfig({ window, ngram, candidates });
}

function lookaheadName(config: LookaheadConfig): string {
  return `${config.window},${config.ngram},${config.candidates}`;
}

/** The sweep's configurations beside the fixed-K one already measured: each other K, and each tree size at K deep. */
function sweepConfigs(
  options: ReturnType<typeof parseOptions>,
  drafterName: string,
  drafter: Drafter,
  draftModel: TimedModel | undefined,
  prompts: readonly number[][],
  target: TimedModel | undefined,
): Config[] {
  const point = (name: string, speculation: Omit<Speculation, "drafter" | "costs">): Config => ({
    name: `${drafterName}/${name}`,
    drafterName,
    target,
    policy: "sweep",
    speculation: { drafter, costs: new CostModel(), ...speculation },
    draftModel,
    runs: prompts.map(() => []),
  });
  return [
    ...sweepList(options["sweep-k"])
      .filter((k) => k !== options.k)
      .map((k) => point(`k=${k}`, { k: { kind: "fixed", k } })),
    ...sweepList(options["sweep-tree-nodes"]).map((nodes) =>
      point(`tree-nodes=${nodes}`, {
        k: { kind: "fixed", k: options.k },
        tree: { width: options["tree-width"], nodes },
      }),
    ),
  ];
}

export async function run(argv: readonly string[]): Promise<BenchReport> {
  const options = parseOptions(argv);
  let drafterNames = options.drafters.split(",").filter((d) => d.length > 0);
  for (const name of drafterNames) {
    if (!(name in DRAFTER_MODELS))
      throw new RangeError(`unknown drafter ${name}; known: ${Object.keys(DRAFTER_MODELS)}`);
  }
  const draftThreads = (model: string) =>
    options["draft-threads"] === "auto" ? (modelBytes(model) < 16e6 ? 1 : 0) : options["draft-threads"];
  progress(`loading target ${options.target}`);
  const target = new TimedModel(await OnnxCausalLM.load(options.target, { intraOpThreads: options["target-threads"] }));
  const tokenizer = await loadTokenizer(resolveModel(options.target).dir);
  const prompts = storyPrompts(options.prompts).map((text) => tokenizer.encode(text, { bos: true }));

  const configs: Config[] = [];
  const closers: (() => Promise<void>)[] = [() => target.close()];
  const withHeads = (drafter: string) => `${options.target}-${drafter}`;
  drafterNames = drafterNames.filter((d) => {
    const missing = isMedusa(d) && !existsSync(join(MODELS_ROOT, withHeads(d), "config.json"));
    if (missing) progress(`no ${withHeads(d)} model: ${d} skipped (build it with npm run train:medusa)`);
    return !missing;
  });
  for (const drafterName of drafterNames) {
    const modelName = DRAFTER_MODELS[drafterName];
    let drafter: Drafter;
    let draftModel: TimedModel | undefined;
    let verifier: TimedModel | undefined;
    if (isMedusa(drafterName)) {
      progress(`loading ${withHeads(drafterName)}`);
      const heads = await OnnxCausalLM.load(withHeads(drafterName), { intraOpThreads: options["target-threads"] });
      if (!isMedusaLM(heads)) throw new Error(`${withHeads(drafterName)} has no Medusa heads`);
      verifier = new TimedModel(heads);
      closers.push(() => (verifier as TimedModel).close());
      drafter = new MedusaDrafter(heads, drafterName);
    } else if (modelName) {
      progress(`loading draft ${modelName}`);
      draftModel = new TimedModel(await OnnxCausalLM.load(modelName, { intraOpThreads: draftThreads(modelName) }));
      closers.push(() => (draftModel as TimedModel).close());
      drafter = new ModelDrafter(draftModel, drafterName);
    } else {
      drafter = new NgramDrafter();
    }
    const policies: [Config["policy"], KPolicyConfig][] = [
      ["fixed", { kind: "fixed", k: options.k }],
      ["adaptive", { kind: "adaptive", kMin: 0, kMax: options["k-max"] }],
    ];
    const treeLimit = { width: options["tree-width"], nodes: options["tree-nodes"] };
    for (const [policy, k] of [...policies, ["tree", policies[1][1]], ["tree-flat", policies[1][1]]] as const) {
      // One cost model per configuration, shared by its requests as a service shares it across users.
      const costs = new CostModel();
      // "tree-flat": the tree policy told that verifying any number of positions costs what one does, to project
      // what it would choose, and gain, on a GPU at batch 1.
      const flat = {
        draftMs: (forwards: number, positions: number) => costs.draftMs(forwards, positions),
        verifyMs: () => costs.verifyMs(1),
        get alpha() {
          return costs.alpha;
        },
      };
      const tree = policy === "tree" ? costs : policy === "tree-flat" ? flat : undefined;
      configs.push({
        name: `${drafterName}/${policy}`,
        drafterName,
        target: verifier,
        policy,
        speculation: { drafter, k, costs, ...(tree && { tree: new TreePolicy(tree, treeLimit) }) },
        draftModel,
        runs: prompts.map(() => []),
      });
    }
    const deep = options["deep-tree-depth"];
    if (deep > 0) {
      for (const policy of ["deep-chain", "deep-tree"] as const) {
        configs.push({
          name: `${drafterName}/${policy}`,
          drafterName,
          target: verifier,
          policy,
          speculation: {
            drafter,
            k: { kind: "fixed", k: deep },
            ...(policy === "deep-tree" && {
              tree: { width: options["tree-width"], nodes: options["deep-tree-nodes"] },
            }),
          },
          draftModel,
          runs: prompts.map(() => []),
        });
      }
    }
    if (drafterName === options["sweep-drafter"])
      configs.push(...sweepConfigs(options, drafterName, drafter, draftModel, prompts, verifier));
  }

  const lookahead = options.lookahead === "none" ? undefined : lookaheadOption(options.lookahead);
  // The default (W, N, G) with its on/off switch, as a request gets it, then every sweep point always on.
  const lookaheadSweep = lookahead
    ? options["sweep-lookahead"]
        .split(";")
        .filter((v) => v.length > 0)
        .map(lookaheadOption)
    : [];
  const lookaheadEntry = (name: string, policy: Config["policy"], config: Lookahead): Config => ({
    name,
    drafterName: "lookahead",
    policy,
    lookahead: config,
    draftModel: undefined,
    runs: prompts.map(() => []),
  });
  if (lookahead)
    configs.push(lookaheadEntry("lookahead", "lookahead", { config: lookahead, switch: new LookaheadSwitch() }));
  for (const config of lookaheadSweep) {
    configs.push(lookaheadEntry(`lookahead/${lookaheadName(config)}`, "sweep", { config }));
  }

  try {
    progress("warming up");
    for (const config of [undefined, ...configs]) {
      await runOne(config?.target ?? target, prompts[0], Math.min(16, options.tokens), config);
    }
    const baselineRuns: Runs = prompts.map(() => []);
    const steps = new Progress(progress, options.repeats * prompts.length);
    for (let repeat = 0; repeat < options.repeats; repeat++) {
      for (const [i, prompt] of prompts.entries()) {
        const base = await runOne(target, prompt, options.tokens, undefined);
        baselineRuns[i].push(base);
        const line = [
          `repeat ${repeat + 1}/${options.repeats} prompt ${i + 1}/${prompts.length}: target-only ${round(base.decodeMs, 0)} ms`,
        ];
        for (const config of configs) {
          const spec = await runOne(config.target ?? target, prompt, options.tokens, config);
          config.runs[i].push(spec);
          line.push(`${config.name} ${round(base.decodeMs / spec.decodeMs, 2)}x`);
        }
        steps.step(line.join(", "));
      }
    }
    const baseline = fastest(baselineRuns);
    const targetStepMs = mean(baseline.targetForwards.map((f) => f.ms));
    const quietTargetStepMs = quantile(
      baseline.targetForwards.map((f) => f.ms),
      QUIET,
    );
    const byConfig = new Map(configs.map((c) => [c.name, figures(c, baseline, targetStepMs, quietTargetStepMs)]));
    const adaptiveWins =
      sum(configs.filter((c) => c.policy === "adaptive").map((c) => byConfig.get(c.name)?.speedup ?? 0)) >=
      sum(configs.filter((c) => c.policy === "fixed").map((c) => byConfig.get(c.name)?.speedup ?? 0));
    const winner: Config["policy"] = adaptiveWins ? "adaptive" : "fixed";
    const sweepPoint = (name: string) => {
      const f = byConfig.get(name);
      return (
        f && {
          speedup: f.speedup,
          ideal_speedup: f.ideal_speedup,
          ideal_speedup_quiet: f.ideal_speedup_quiet,
          tokens_per_round: f.tokens_per_round,
        }
      );
    };
    const decodeMs = (name: string) =>
      configs
        .find((c) => c.name === name)
        ?.runs.flat()
        .map((r) => r.decodeMs) ?? [];
    const pairedSpeedup = (chain: string, tree: string) => pairedRatio(decodeMs(chain), decodeMs(tree));
    const drafters: Record<string, unknown> = {};
    const deepTrees: Record<string, unknown> = {};
    for (const name of drafterNames) {
      const fixed = byConfig.get(`${name}/fixed`);
      const adaptive = byConfig.get(`${name}/adaptive`);
      const model = isMedusa(name) ? withHeads(name) : (DRAFTER_MODELS[name] ?? null);
      drafters[name] = {
        ...(winner === "adaptive" ? adaptive : fixed),
        model,
        fixed,
        adaptive,
      };
      const tree = byConfig.get(`${name}/tree`);
      const flat = byConfig.get(`${name}/tree-flat`);
      drafters[`${name}/tree`] = {
        ...tree,
        model,
        tree_limit: { width: options["tree-width"], nodes: options["tree-nodes"] },
        /** S over the chain's with the same (adaptive) K policy: what the tree policy adds, or loses. */
        speedup_vs_chain: round((tree?.speedup ?? 0) / (adaptive?.speedup ?? 1)),
        /** The same over every prompt and repeat, pair by pair, with its 95% interval: whether the run can tell. */
        speedup_vs_chain_paired: pairedSpeedup(`${name}/adaptive`, `${name}/tree`),
        /** The tree policy run on this CPU but told that verify cost is flat: what it picks and gains on a GPU. */
        policy_with_flat_verify_cost: flat && {
          tokens_per_round: flat.tokens_per_round,
          nodes_per_round: flat.nodes_per_round,
          projected_speedup_flat_verify: flat.projected_speedup_flat_verify,
          identical_output: flat.identical_output,
        },
      };
      const deepChain = byConfig.get(`${name}/deep-chain`);
      const deepTree = byConfig.get(`${name}/deep-tree`);
      if (deepChain && deepTree) {
        deepTrees[name] = {
          depth: options["deep-tree-depth"],
          width: options["tree-width"],
          nodes: options["deep-tree-nodes"],
          chain: deepChain,
          tree: deepTree,
          tokens_per_round_ratio: round(deepTree.tokens_per_round / deepChain.tokens_per_round),
        };
      }
    }
    if (lookahead) {
      drafters.lookahead = {
        ...byConfig.get("lookahead"),
        model: null,
        ...lookahead,
        /** Each (W, N, G) with Lookahead in every round. */
        sweep: Object.fromEntries(
          lookaheadSweep.map((c) => [lookaheadName(c), sweepPoint(`lookahead/${lookaheadName(c)}`)]),
        ),
      };
    }
    const best = drafterNames.reduce((a, b) =>
      (byConfig.get(`${a}/${winner}`)?.speedup ?? 0) >= (byConfig.get(`${b}/${winner}`)?.speedup ?? 0) ? a : b,
    );
    const baselineForwardMs = sum(baseline.targetForwards.map((f) => f.ms));
    const sweepDrafter = options["sweep-drafter"];
    const json = {
      target: options.target,
      prompts: prompts.length,
      repeats: options.repeats,
      max_new_tokens: options.tokens,
      generated_tokens: sum(baseline.tokens.map((t) => t.length)),
      fixed_k: options.k,
      adaptive_k_max: options["k-max"],
      target_step_ms: round(targetStepMs),
      target_step_ms_quiet: round(quietTargetStepMs),
      target_only_tokens_per_s: round((sum(baseline.tokens.map((t) => t.length)) / baseline.decodeMs) * 1000, 1),
      target_only_breakdown_ms: {
        decode: round(baseline.decodeMs, 1),
        forward: round(baselineForwardMs, 1),
        other: round(baseline.decodeMs - baselineForwardMs, 1),
      },
      projection_definition: FLAT_VERIFY_DEFINITION,
      default_policy: winner,
      best_drafter: best,
      drafters,
      /** Per drafter: a fixed chain and a fixed tree at a generous depth, what branching buys in tokens per round. */
      deep_trees: deepTrees,
      sweep: drafterNames.includes(sweepDrafter)
        ? {
            drafter: sweepDrafter,
            tree_width: options["tree-width"],
            tree_depth: options.k,
            by_k: Object.fromEntries(
              sweepList(options["sweep-k"]).map((k) => [
                k,
                sweepPoint(k === options.k ? `${sweepDrafter}/fixed` : `${sweepDrafter}/k=${k}`),
              ]),
            ),
            by_tree_nodes: Object.fromEntries(
              sweepList(options["sweep-tree-nodes"]).map((n) => [n, sweepPoint(`${sweepDrafter}/tree-nodes=${n}`)]),
            ),
          }
        : null,
    };
    const summary = [
      `target ${options.target}: ${json.target_only_tokens_per_s} tokens/s target-only, step ${json.target_step_ms} ms`,
      `${"config".padEnd(22)} ${"alpha".padStart(6)} ${"α/tok".padStart(6)} ${"acc/rnd".padStart(8)} ${"c".padStart(7)} ${"S".padStart(6)} ${"S*".padStart(6)} ${"eff".padStart(6)} ${"S*quiet".padStart(7)} identical`,
      ...[...byConfig].map(([name, f]) =>
        [
          name.padEnd(22),
          f.alpha.toFixed(3).padStart(6),
          f.alpha_per_token.toFixed(3).padStart(6),
          f.mean_accepted_per_round.toFixed(2).padStart(8),
          f.c.toFixed(4).padStart(7),
          f.speedup.toFixed(2).padStart(6),
          f.ideal_speedup.toFixed(2).padStart(6),
          f.efficiency.toFixed(3).padStart(6),
          f.ideal_speedup_quiet.toFixed(2).padStart(7),
          ` ${f.identical_output}`,
        ].join(" "),
      ),
      `default policy (higher total speedup): ${winner}; best drafter: ${best}`,
      `projection (not measured), S* if verifying up to 64 positions cost one step: ${[...byConfig]
        .map(([name, f]) => `${name} ${f.projected_speedup_flat_verify} (${f.nodes_per_round} nodes/round)`)
        .join(", ")}`,
    ];
    return { summary, json };
  } finally {
    for (const close of closers) await close();
  }
}
