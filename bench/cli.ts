/**
 * `npm run bench -- --mode <mode> [--json] [mode options]`: the speculation benchmarks. Each mode is a module that
 * measures, shows progress on stderr, and returns its report; this entry point prints a readable summary (unless
 * --json) and then the report as one JSON object on the last line of stdout.
 *
 * Modes: `inproc` (bench/speculative.ts: the engine in one process), `telemetry` (bench/telemetry.ts: tracing and
 * metrics overhead per round), `distributed` (bench/distributed.ts: the same figures end to end through the gateway
 * of a local stack, per-round overhead, throughput at 1..16 concurrent streams). Add a mode by adding a loader below.
 *
 * `--plot DIR` also writes the report's figures as SVG charts into DIR (bench/charts.ts); `--plot DIR --from FILE`
 * draws them from a report saved earlier (the last line of a `--json` run) without measuring again.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { chartsFor } from "./charts.ts";
import { writeCharts } from "./svg.ts";

export interface BenchMode {
  /** Parses the mode's own options from argv, runs, and returns the report (a JSON-serialisable object). */
  run(argv: readonly string[]): Promise<BenchReport>;
}

export interface BenchReport {
  /** Lines for people, printed before the JSON unless --json. */
  readonly summary: readonly string[];
  readonly json: Record<string, unknown>;
}

const MODES: Record<string, () => Promise<BenchMode>> = {
  inproc: () => import("./speculative.ts"),
  telemetry: () => import("./telemetry.ts"),
  distributed: () => import("./distributed.ts"),
};

async function main(): Promise<void> {
  const { values, tokens } = parseArgs({
    options: {
      mode: { type: "string", default: "inproc" },
      json: { type: "boolean", default: false },
      plot: { type: "string" },
      from: { type: "string" },
    },
    strict: false,
    tokens: true,
  });
  if (typeof values.from === "string") {
    await plotSaved(values.from, values.plot);
    return;
  }
  const load = MODES[String(values.mode)];
  if (!load) {
    process.stderr.write(`unknown --mode ${values.mode}; modes: ${Object.keys(MODES).join(", ")}\n`);
    process.exit(2);
  }
  // The mode sees every option except the ones read here.
  const rest: string[] = [];
  for (const token of tokens) {
    if (token.kind === "option" && ["mode", "json", "plot", "from"].includes(token.name)) continue;
    if (token.kind === "option") {
      rest.push(token.rawName);
      if (token.value !== undefined) rest.push(token.value);
    } else if (token.kind === "positional") rest.push(token.value);
  }
  const report = await (await load()).run(rest);
  if (!values.json) for (const line of report.summary) process.stdout.write(`${line}\n`);
  const json = { mode: values.mode, ...report.json };
  if (typeof values.plot === "string") await plot(String(values.mode), json, values.plot);
  process.stdout.write(`${JSON.stringify(json)}\n`);
}

async function plot(mode: string, report: unknown, dir: string): Promise<void> {
  const paths = await writeCharts(chartsFor(mode, report), dir);
  process.stderr.write(
    paths.length === 0 ? `no figures to plot in this ${mode} report\n` : `charts: ${paths.join(", ")}\n`,
  );
}

/** Charts of a saved report: its last non-empty line is the JSON object a `--json` run printed. */
async function plotSaved(file: string, dir: string | boolean | undefined): Promise<void> {
  if (typeof dir !== "string") {
    process.stderr.write("--from needs --plot DIR\n");
    process.exit(2);
  }
  const last = readFileSync(file, "utf8").trim().split("\n").at(-1) ?? "";
  const report = JSON.parse(last) as { mode?: unknown };
  await plot(String(report.mode), report, dir);
}

await main();
