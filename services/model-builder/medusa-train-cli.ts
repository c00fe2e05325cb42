/**
 * `npm run train:medusa`: trains the Medusa head set by self-distillation (medusa-train.ts), prints each head's
 * held-out accuracy beside its baselines, keeps the heads under models/.medusa-heads/ and (re)builds the models that
 * carry them.
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { MODELS_ROOT } from "../runtime/model-files.ts";
import { readLlama2c } from "./llama2c.ts";
import { writeHeadSet } from "./medusa-heads.ts";
import { DEFAULT_TRAINING, type TrainingReport, trainMedusaHeads } from "./medusa-train.ts";
import { buildModels, defaultSourceDir, HEADS_DIR, MEDUSA_HEADS, RECIPES, SOURCE_CHECKPOINT } from "./models-build.ts";

const HELP = `Usage: npm run train:medusa [-- options]

Trains ${DEFAULT_TRAINING.heads} Medusa heads on text stories260K writes itself, then builds
${RECIPES.filter((r) => r.heads === MEDUSA_HEADS)
  .map((r) => r.name)
  .join(" and ")}.

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
  const int = (value: string | undefined, fallback: number, name: string) => {
    const n = value === undefined ? fallback : Number(value);
    if (!Number.isInteger(n) || n <= 0) throw new RangeError(`--${name} must be a positive integer, got ${value}`);
    return n;
  };
  const projection = values.projection ?? DEFAULT_TRAINING.projection;
  if (projection !== "shared" && projection !== "own") throw new RangeError("--projection is shared or own");
  const options = {
    ...DEFAULT_TRAINING,
    seed: int(values.seed, DEFAULT_TRAINING.seed, "seed"),
    epochs: int(values.epochs, DEFAULT_TRAINING.epochs, "epochs"),
    sequences: int(values.sequences, DEFAULT_TRAINING.sequences, "sequences"),
    projection,
  } as const;
  const outDir = resolve(values.out ?? MODELS_ROOT);
  const { weights } = await readLlama2c(join(defaultSourceDir(), SOURCE_CHECKPOINT));
  const set = await trainMedusaHeads(weights, options, (stage) => process.stderr.write(`train:medusa: ${stage}\n`));
  await writeHeadSet(join(outDir, HEADS_DIR), MEDUSA_HEADS, set);
  process.stdout.write(`${table((set.info.training as { report: TrainingReport }).report)}\n`);
  if (values["no-build"]) return;
  const built = await buildModels({
    sourceDir: defaultSourceDir(),
    outDir,
    only: RECIPES.filter((r) => r.heads === MEDUSA_HEADS).map((r) => r.name),
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
