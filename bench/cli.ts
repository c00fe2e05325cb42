/**
 * `npm run bench -- --mode <mode> [--json] [mode options]`: the speculation benchmarks. Each mode is a module that
 * measures, shows progress on stderr, and returns its report; this entry point prints a readable summary (unless
 * --json) and then the report as one JSON object on the last line of stdout.
 *
 * Modes: `inproc` (bench/speculative.ts: the engine in one process), `telemetry` (bench/telemetry.ts: tracing and
 * metrics overhead per round), `distributed` (bench/distributed.ts: the same figures end to end through the gateway
 * of a local stack, per-round overhead, throughput at 1..16 concurrent streams). Add a mode by adding a loader below.
 */
import { parseArgs } from "node:util";

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
    options: { mode: { type: "string", default: "inproc" }, json: { type: "boolean", default: false } },
    strict: false,
    tokens: true,
  });
  const load = MODES[String(values.mode)];
  if (!load) {
    process.stderr.write(`unknown --mode ${values.mode}; modes: ${Object.keys(MODES).join(", ")}\n`);
    process.exit(2);
  }
  // The mode sees every option except the two read here.
  const rest: string[] = [];
  for (const token of tokens) {
    if (token.kind === "option" && (token.name === "mode" || token.name === "json")) continue;
    if (token.kind === "option") {
      rest.push(token.rawName);
      if (token.value !== undefined) rest.push(token.value);
    } else if (token.kind === "positional") rest.push(token.value);
  }
  const report = await (await load()).run(rest);
  if (!values.json) for (const line of report.summary) process.stdout.write(`${line}\n`);
  process.stdout.write(`${JSON.stringify({ mode: values.mode, ...report.json })}\n`);
}

await main();
