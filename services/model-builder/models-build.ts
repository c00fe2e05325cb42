/**
 * The project's model catalogue (what `npm run models` builds from the stories260K checkpoint) and its idempotent
 * builder: a model is rebuilt only when its stamp (source checksums + a hash of the builder's own code) changed.
 */
import { createHash } from "node:crypto";
import { chmod, copyFile, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { LLAMA2C_TOKENIZER_FILE } from "../runtime/tokenizer/llama2c.ts";
import { costScale, type LlamaShape, STORIES_110M } from "./cost-scale.ts";
import { earlyExit, type LlamaWeights, type MedusaHead } from "./llama-weights.ts";
import { readLlama2c } from "./llama2c.ts";
import { headFiles, readHeadSet, writeHeadSet } from "./medusa-heads.ts";
import { DEFAULT_TRAINING, trainMedusaHeads } from "./medusa-train.ts";
import { modelCost } from "./model-cost.ts";
import { type WriteProgress, writeModelDir } from "./model-dir.ts";
import { quantizeWeights } from "./quantize.ts";

const HERE = dirname(fileURLToPath(import.meta.url));
export const PROJECT_ROOT = resolve(HERE, "../..");

/** The stories260K checkpoint and tokenizer the repository carries, so that a fresh clone builds its models alone. */
export const BUNDLED_SOURCE_DIR = resolve(PROJECT_ROOT, "model-data/tinystories-260k");

/** Where the stories260K checkpoint and its tokenizer are: SPECGATE_MODEL_DATA, else the bundled copy. */
export function defaultSourceDir(): string {
  return process.env.SPECGATE_MODEL_DATA ?? BUNDLED_SOURCE_DIR;
}

export const SOURCE_CHECKPOINT = "stories260K.bin";
export const SOURCE_TOKENIZER = "tok512.bin";
export const STAMP_FILE = "specgate-build.json";

/** Shapes of the optional cost-scaled draft: about a tenth of the 110M target's parameters and FLOPs per token. */
export const DRAFT_11M: LlamaShape = {
  dim: 256,
  hiddenDim: 512,
  nLayers: 5,
  nHeads: 8,
  nKvHeads: 4,
  headDim: 32,
  vocabSize: 32000,
};

export interface ModelRecipe {
  readonly name: string;
  readonly summary: string;
  /** Cost-scaled models: hundreds of MB, shown with a progress indicator. */
  readonly large: boolean;
  /**
   * The Medusa head set the model carries (trained by medusa-train.ts when missing). Such models are built only when
   * asked for by name (`--only`, `npm run train:medusa`): training takes minutes, and the quick start needs none.
   */
  readonly heads?: string;
  /** The variant's weights and provenance details, from the exact model (and the recipe's heads). */
  make(
    exact: LlamaWeights,
    heads: readonly MedusaHead[],
  ): { weights: LlamaWeights; variant: string; details: Record<string, unknown> };
}

/** The head set of the Medusa models: 4 heads sharing stories260K's classifier. */
export const MEDUSA_HEADS = "stories260k-4-shared";
/** Where trained head sets are kept, under the models folder. */
export const HEADS_DIR = ".medusa-heads";

/** Int4 drafts use group size 32 (agreement with the exact model: see bench/drafts.ts). */
const INT4_GROUP = 32;

/** Quantized then dequantized, so cost scaling can pad the quantized values. */
function int4Values(exact: LlamaWeights): LlamaWeights {
  return quantizeWeights(exact, { bits: 4, groupSize: INT4_GROUP, format: "dequantized" });
}

export const RECIPES: readonly ModelRecipe[] = [
  {
    name: "stories260k",
    summary: "the exact stories260K model",
    large: false,
    make: (exact) => ({ weights: exact, variant: "exact", details: {} }),
  },
  {
    name: "stories260k-x110m",
    summary: "cost-scaled target: stories260K zero-padded to stories110M shapes (same greedy output)",
    large: true,
    make: (exact) => ({
      weights: costScale(exact, STORIES_110M),
      variant: "cost-scaled",
      details: { shape: STORIES_110M, original: exact.config },
    }),
  },
  {
    name: "stories260k-int4",
    summary: `draft: weights quantized to 4 bits in groups of ${INT4_GROUP}`,
    large: false,
    make: (exact) => ({
      weights: int4Values(exact),
      variant: `int4-g${INT4_GROUP}`,
      details: { bits: 4, groupSize: INT4_GROUP, format: "dequantized" },
    }),
  },
  {
    name: "stories260k-exit4",
    summary: "draft: the first 4 of 5 layers, final norm and classifier",
    large: false,
    make: (exact) => ({ weights: earlyExit(exact, 4), variant: "early-exit-4", details: { layers: 4 } }),
  },
  {
    name: "stories260k-x110m-exit3",
    summary: "self-speculative draft of the cost-scaled target: its first 3 layers",
    large: true,
    make: (exact) => ({
      weights: earlyExit(costScale(exact, STORIES_110M), 3),
      variant: "cost-scaled-early-exit-3",
      details: { shape: STORIES_110M, layers: 3 },
    }),
  },
  {
    name: "stories260k-int4-x11m",
    summary: "cost-scaled draft: the int4 weights zero-padded to ~11M-parameter shapes (1/10 of the target's cost)",
    large: true,
    make: (exact) => ({
      weights: costScale(int4Values(exact), DRAFT_11M),
      variant: `int4-g${INT4_GROUP}-cost-scaled`,
      details: { bits: 4, groupSize: INT4_GROUP, format: "dequantized", shape: DRAFT_11M },
    }),
  },
  {
    name: "stories260k-medusa",
    summary: "stories260K with 4 Medusa heads sharing its classifier (`npm run train:medusa`)",
    large: false,
    heads: MEDUSA_HEADS,
    make: (exact, heads) => ({
      weights: { ...exact, medusa: heads },
      variant: "medusa",
      details: { heads: heads.length },
    }),
  },
  {
    name: "stories260k-x110m-medusa",
    summary: "the cost-scaled target with the same Medusa heads, padded with it",
    large: true,
    heads: MEDUSA_HEADS,
    make: (exact, heads) => ({
      weights: costScale({ ...exact, medusa: heads }, STORIES_110M),
      variant: "cost-scaled-medusa",
      details: { shape: STORIES_110M, original: exact.config, heads: heads.length },
    }),
  },
];

// Everything that decides a model's bytes: a change to any of these files rebuilds the models.
const BUILDER_FILES = [
  "models-build.ts",
  "model-dir.ts",
  "model-config.ts",
  "llama-graph.ts",
  "llama-weights.ts",
  "llama2c.ts",
  "onnx-graph.ts",
  "cost-scale.ts",
  "quantize.ts",
  "medusa-heads.ts",
  // The name of attention_mask's width, which tells the runtime that a graph reads tree masks.
  "../runtime/decoder-layout.ts",
];

async function sha256(path: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(path))
    .digest("hex");
}

async function builderHash(): Promise<string> {
  const hash = createHash("sha256");
  for (const file of BUILDER_FILES) hash.update(await readFile(join(HERE, file)));
  return hash.digest("hex").slice(0, 16);
}

interface Stamp {
  readonly name: string;
  readonly builder: string;
  readonly checkpointSha256: string;
  readonly tokenizerSha256: string;
  readonly headsSha256?: string;
}

async function readStamp(dir: string): Promise<Stamp | null> {
  try {
    return JSON.parse(await readFile(join(dir, STAMP_FILE), "utf8")) as Stamp;
  } catch {
    return null;
  }
}

export type BuildEvent =
  | { readonly kind: "skip"; readonly name: string }
  | { readonly kind: "start"; readonly name: string; readonly large: boolean }
  | { readonly kind: "progress"; readonly name: string; readonly stage: string; readonly fraction: number }
  | { readonly kind: "train"; readonly name: string; readonly stage: string }
  | {
      readonly kind: "done";
      readonly name: string;
      readonly elapsedMs: number;
      readonly weightBytes: number;
      readonly parameters: number;
    };

export interface BuildOptions {
  readonly sourceDir: string;
  readonly outDir: string;
  /** Names of the recipes to build (default all). */
  readonly only?: readonly string[];
  /** Rebuild even when the stamp says the model is up to date. */
  readonly force?: boolean;
  readonly onEvent?: (event: BuildEvent) => void;
}

/** Builds the catalogue's models into `outDir`, skipping those that are up to date. Returns the names built. */
export async function buildModels(options: BuildOptions): Promise<string[]> {
  const emit = options.onEvent ?? (() => {});
  const unknown = (options.only ?? []).filter((n) => !RECIPES.some((r) => r.name === n));
  if (unknown.length > 0) {
    throw new Error(`unknown model ${unknown.join(", ")} (known: ${RECIPES.map((r) => r.name).join(", ")})`);
  }
  const recipes = RECIPES.filter((r) =>
    options.only === undefined ? r.heads === undefined : options.only.includes(r.name),
  );
  const checkpointPath = join(options.sourceDir, SOURCE_CHECKPOINT);
  const tokenizerPath = join(options.sourceDir, SOURCE_TOKENIZER);
  const [checkpointSha256, tokenizerSha256, builder] = await Promise.all([
    sha256(checkpointPath).catch(() => {
      throw new Error(
        `${checkpointPath} not found: set SPECGATE_MODEL_DATA to the folder holding ${SOURCE_CHECKPOINT}`,
      );
    }),
    sha256(tokenizerPath),
    builderHash(),
  ]);
  let exact: LlamaWeights | undefined;
  const built: string[] = [];
  const headsDir = join(options.outDir, HEADS_DIR);
  const headSets = new Map<string, readonly MedusaHead[]>();
  for (const recipe of recipes) {
    const dir = join(options.outDir, recipe.name);
    let heads: readonly MedusaHead[] = [];
    let headsSha256: string | undefined;
    if (recipe.heads !== undefined) {
      const name = recipe.heads;
      if (!headSets.has(name)) {
        let set = await readHeadSet(headsDir, name);
        if (set === null) {
          exact ??= (await readLlama2c(checkpointPath)).weights;
          set = await trainMedusaHeads(exact, DEFAULT_TRAINING, (stage) => emit({ kind: "train", name, stage }));
          await writeHeadSet(headsDir, name, set);
        }
        headSets.set(name, set.heads);
      }
      heads = headSets.get(name) ?? [];
      headsSha256 = await sha256(headFiles(headsDir, name).weights);
    }
    const stamp: Stamp = { name: recipe.name, builder, checkpointSha256, tokenizerSha256, headsSha256 };
    const previous = await readStamp(dir);
    if (!options.force && previous !== null && JSON.stringify(previous) === JSON.stringify(stamp)) {
      emit({ kind: "skip", name: recipe.name });
      continue;
    }
    const started = performance.now();
    emit({ kind: "start", name: recipe.name, large: recipe.large });
    exact ??= (await readLlama2c(checkpointPath)).weights;
    const { weights, variant, details } = recipe.make(exact, heads);
    const tied = weights.classifier === null;
    const cost = modelCost(weights.config, tied);
    const onProgress: WriteProgress = (stage, fraction) =>
      emit({ kind: "progress", name: recipe.name, stage, fraction });
    // Built beside the target and swapped in whole, so readers never see half a model; one staging folder per
    // process, so concurrent `npm run models` runs (several test suites at once) cannot mix their files.
    const staging = join(options.outDir, `.${recipe.name}.building-${process.pid}`);
    await rm(staging, { recursive: true, force: true });
    const written = await writeModelDir(
      staging,
      weights,
      {
        variant,
        source: SOURCE_CHECKPOINT,
        sourceSha256: checkpointSha256,
        realVocabSize: weights.config.realVocabSize,
        details: { ...details, ...cost, tiedEmbeddings: tied },
      },
      onProgress,
    );
    await copyFile(tokenizerPath, join(staging, LLAMA2C_TOKENIZER_FILE));
    await chmod(join(staging, LLAMA2C_TOKENIZER_FILE), 0o644); // the shared source is read-only
    await writeFile(join(staging, STAMP_FILE), `${JSON.stringify(stamp, null, 2)}\n`);
    await rm(dir, { recursive: true, force: true });
    await rename(staging, dir);
    built.push(recipe.name);
    emit({
      kind: "done",
      name: recipe.name,
      elapsedMs: performance.now() - started,
      weightBytes: written.weightBytes,
      parameters: cost.parameters,
    });
  }
  return built;
}
