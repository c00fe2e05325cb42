/**
 * `npm run models`: builds the model catalogue into models/ (idempotent), or with `--pull` downloads a llama2.c
 * checkpoint and converts it. Progress goes to stderr, one line per model.
 */
import { access, copyFile, mkdir, rm, writeFile } from "node:fs/promises";
import { basename, extname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { MODELS_ROOT } from "../runtime/model-files.ts";
import { LLAMA2C_TOKENIZER_FILE } from "../runtime/tokenizer/llama2c.ts";
import { readLlama2c } from "./llama2c.ts";
import { modelCost } from "./model-cost.ts";
import { writeModelDir } from "./model-dir.ts";
import { type BuildEvent, buildModels, defaultSourceDir, RECIPES } from "./models-build.ts";
import { type PullResult, pull } from "./pull.ts";

const HELP = `Usage: npm run models [-- options]

Builds specgate's models into models/ from the stories260K checkpoint (skips models that are up to date).

Options:
  --only NAME         build only this model (repeatable)
  --force             rebuild even when up to date
  --out DIR           output folder (default: models/ at the project root)
  --pull SOURCE       download a llama2.c checkpoint (http(s) URL or hub file owner/repo/path) and convert it
  --tokenizer SOURCE  with --pull: tokenizer.bin to put beside it (URL, hub file or local path)
  --name NAME         with --pull: model directory name (default: the checkpoint's file name, lower case)
  --sha256 HEX        with --pull: expected checksum of the checkpoint
  -h, --help          show this help

Environment:
  SPECGATE_MODEL_DATA folder with stories260K.bin and tok512.bin (default model-data/tinystories-260k)

Models (those with Medusa heads are built only when named with --only; their heads are trained first when missing,
see npm run train:medusa):
${RECIPES.map((r) => `  ${r.name.padEnd(24)}${r.summary}`).join("\n")}
`;

const MB = 1024 * 1024;

function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** One line per model on stderr; big models also get a live stage/percentage indicator when stderr is a terminal. */
function progressPrinter(): (event: BuildEvent) => void {
  const live = process.stderr.isTTY;
  let lastLine = "";
  return (event) => {
    switch (event.kind) {
      case "skip":
        process.stderr.write(`models: ${event.name} up to date\n`);
        break;
      case "start":
        if (!live) process.stderr.write(`models: building ${event.name}${event.large ? " (large)" : ""}…\n`);
        break;
      case "progress": {
        const line = `models: building ${event.name}: ${event.stage} ${Math.round(event.fraction * 100)}%`;
        if (live && line !== lastLine) process.stderr.write(`\r\x1b[K${line}`);
        lastLine = line;
        break;
      }
      case "train":
        process.stderr.write(`models: training Medusa heads ${event.name}: ${event.stage}\n`);
        break;
      case "done":
        process.stderr.write(
          `${live ? "\r\x1b[K" : ""}models: built ${event.name} in ${formatSeconds(event.elapsedMs)} ` +
            `(${(event.parameters / 1e6).toFixed(2)}M parameters, ${(event.weightBytes / MB).toFixed(1)} MiB of weights)\n`,
        );
        break;
    }
  };
}

function pullProgress(label: string): (p: { bytes: number; total: number | undefined }) => void {
  let last = 0;
  return ({ bytes, total }) => {
    const now = Date.now();
    if (now - last < 500 && bytes !== total) return;
    last = now;
    const pct = total ? ` (${Math.round((100 * bytes) / total)}%)` : "";
    process.stderr.write(`models: pulling ${label}: ${(bytes / MB).toFixed(1)} MiB${pct}\n`);
  };
}

/** Downloads a llama2.c checkpoint (and optionally its tokenizer) and converts it to models/<name>. */
async function pullAndConvert(
  outDir: string,
  source: string,
  options: { tokenizer?: string; name?: string; sha256?: string },
): Promise<void> {
  const downloads = join(outDir, ".downloads");
  const checkpoint: PullResult = await pull(source, downloads, {
    expectedSha256: options.sha256,
    onProgress: pullProgress(source),
  });
  if (checkpoint.verifiedBy === "none")
    process.stderr.write(`models: ${checkpoint.path} sha256 ${checkpoint.sha256}\n`);
  const name = options.name ?? basename(checkpoint.path, extname(checkpoint.path)).toLowerCase();
  const started = performance.now();
  const { format, weights } = await readLlama2c(checkpoint.path);
  const dir = join(outDir, name);
  await rm(dir, { recursive: true, force: true });
  const tied = weights.classifier === null;
  const written = await writeModelDir(dir, weights, {
    variant: "exact",
    source: basename(checkpoint.path),
    sourceSha256: checkpoint.sha256,
    realVocabSize: weights.config.realVocabSize,
    details: { llama2cFormat: format, ...modelCost(weights.config, tied), tiedEmbeddings: tied },
  });
  if (options.tokenizer !== undefined) {
    const local = resolve(options.tokenizer);
    const isUrlOrHub = /^https?:\/\//i.test(options.tokenizer) || !(await fileExists(local));
    const tokenizerPath = isUrlOrHub
      ? (await pull(options.tokenizer, downloads, { onProgress: pullProgress(options.tokenizer) })).path
      : local;
    await copyFile(tokenizerPath, join(dir, LLAMA2C_TOKENIZER_FILE));
  } else {
    process.stderr.write(`models: no --tokenizer given; ${dir} works with token ids only\n`);
  }
  await writeFile(
    join(dir, "specgate-pull.json"),
    `${JSON.stringify({ source, sha256: checkpoint.sha256 }, null, 2)}\n`,
  );
  process.stderr.write(
    `models: converted ${basename(checkpoint.path)} (${format}) to ${dir} in ${formatSeconds(performance.now() - started)} ` +
      `(${(written.weightBytes / MB).toFixed(1)} MiB of weights)\n`,
  );
}

async function fileExists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      only: { type: "string", multiple: true },
      force: { type: "boolean", default: false },
      out: { type: "string" },
      pull: { type: "string" },
      tokenizer: { type: "string" },
      name: { type: "string" },
      sha256: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const outDir = resolve(values.out ?? MODELS_ROOT);
  await mkdir(outDir, { recursive: true });
  if (values.pull !== undefined) {
    await pullAndConvert(outDir, values.pull, {
      tokenizer: values.tokenizer,
      name: values.name,
      sha256: values.sha256,
    });
    return;
  }
  const started = performance.now();
  const built = await buildModels({
    sourceDir: defaultSourceDir(),
    outDir,
    only: values.only,
    force: values.force,
    onEvent: progressPrinter(),
  });
  if (built.length > 0) {
    process.stderr.write(
      `models: ${built.length} built in ${formatSeconds(performance.now() - started)} into ${outDir}\n`,
    );
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`models: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
