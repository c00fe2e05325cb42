/**
 * `npm run train:medusa`: trains the Medusa head set by self-distillation (medusa-train.ts), prints each head's
 * held-out accuracy beside its baselines, keeps the heads under models/.medusa-heads/ and (re)builds the models that
 * carry them.
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { MODELS_ROOT } from "../runtime/model-files.ts";
import { readLlama2c } from "./llama2c.ts";
import { writeHeadSet } from "./medusa-heads.ts";
import { DEFAULT_TRAINING, type TrainingReport, trainMedusaHeads } from "./medusa-train.ts";
import { buildModels, defaultSourceDir, HEAD_SETS, HEADS_DIR, RECIPES, SOURCE_CHECKPOINT } from "./models-build.ts";

const HELP = `Usage: npm run train:medusa [-- options]

Trains ${DEFAULT_TRAINING.heads} Medusa heads on text stories260K writes itself, then builds the models that carry them
(${RECIPES.filter((r) => r.heads !== undefined)
  .map((r) => `${r.name}: ${r.heads}`)
  .join(", ")}).

Options:
  --seed N        seed of the text and the shuffles (default ${DEFAULT_TRAINING.seed})
  --epochs N      passes over the text (default ${DEFAULT_TRAINING.epochs})
  --sequences N   texts the target writes (default ${DEFAULT_TRAINING.sequences}, ${DEFAULT_TRAINING.heldOut * 100}% held out)
  --projection P  shared (the classifier, default) or own (a projection per head, initialised from it)
  --no-build      train only
  --out DIR       models folder (default models/ at the project root)
  -h, --help      show this help
`;

function table(report: TrainingReport): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`.padStart(6);
  const lines = report.heads.map(
    (h, i) =>
      `  head ${i} (token t+${i + 2}): top-1 ${pct(h.top1)}  top-5 ${pct(h.top5)}   untrained ${pct(report.untrained[i].top1)} / ` +
      `${pct(report.untrained[i].top5)}   unigram ${pct(report.unigram[i].top1)} / ${pct(report.unigram[i].top5)}`,
  );
  return [
    `train:medusa: loss ${report.loss.map((l) => l.toFixed(3)).join(" → ")} (${report.trainPositions} positions, ` +
      `${report.seconds.toFixed(1)} s)`,
    `train:medusa: held-out accuracy on ${report.heldOutPositions} positions the target wrote:`,
    ...lines,
  ].join("\n");
}

/** A positive integer option, `fallback` when absent. */
const count = (name: string, fallback: number) =>
  z.coerce
    .number({ error: `--${name} must be a positive integer` })
    .int(`--${name} must be a positive integer`)
    .positive(`--${name} must be a positive integer`)
    .default(fallback);

const optionsSchema = z.object({
  seed: count("seed", DEFAULT_TRAINING.seed),
  epochs: count("epochs", DEFAULT_TRAINING.epochs),
  sequences: count("sequences", DEFAULT_TRAINING.sequences),
  projection: z
    .enum(["shared", "own"], { error: "--projection is shared or own" })
    .default(DEFAULT_TRAINING.projection),
});

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seed: { type: "string" },
      epochs: { type: "string" },
      sequences: { type: "string" },
      projection: { type: "string" },
      "no-build": { type: "boolean", default: false },
      out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const parsed = optionsSchema.safeParse(values);
  if (!parsed.success) throw new RangeError(parsed.error.issues.map((issue) => issue.message).join("; "));
  const { projection } = parsed.data;
  const options = { ...DEFAULT_TRAINING, ...parsed.data };
  const outDir = resolve(values.out ?? MODELS_ROOT);
  const { weights } = await readLlama2c(join(defaultSourceDir(), SOURCE_CHECKPOINT));
  const set = await trainMedusaHeads(weights, options, (stage) => process.stderr.write(`train:medusa: ${stage}\n`));
  await writeHeadSet(join(outDir, HEADS_DIR), HEAD_SETS[projection], set);
  process.stdout.write(`${table((set.info.training as { report: TrainingReport }).report)}\n`);
  if (values["no-build"]) return;
  const built = await buildModels({
    sourceDir: defaultSourceDir(),
    outDir,
    only: RECIPES.filter((r) => r.heads === projection).map((r) => r.name),
    onEvent: (event) => {
      if (event.kind === "done") process.stderr.write(`train:medusa: built ${event.name}\n`);
    },
  });
  process.stderr.write(`train:medusa: ${built.length} model(s) built into ${outDir}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`train:medusa: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
