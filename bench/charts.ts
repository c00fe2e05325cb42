/**
 * The benchmarks' figures as charts: pure functions from a report (the JSON object a mode prints) to Vega-Lite
 * specifications, one per figure the report holds. A report without a figure's fields gets no chart for it, so a
 * partial run (`--streams 1`, `--sweep-drafter none`) plots what it measured.
 */
import type { TopLevelSpec } from "vega-lite";
import { z } from "zod";

export interface Chart {
  /** File name without extension. */
  readonly name: string;
  readonly spec: TopLevelSpec;
}

const WIDTH = 480;
const HEIGHT = 280;
/** Pixels of a legend label before Vega cuts it: the series names say what a line measures, keep them whole. */
const LEGEND_LABEL_LIMIT = 320;

const drafterFigures = z.object({
  acceptance_per_position: z.array(z.number()).optional(),
  overhead: z.object({ round_parts_mean_ms: z.record(z.string(), z.number()).optional() }).optional(),
});
const sweepPoint = z.object({ speedup: z.number(), ideal_speedup: z.number() });
const inprocReport = z.object({
  drafters: z.record(z.string(), drafterFigures),
  sweep: z
    .object({
      drafter: z.string(),
      tree_width: z.number(),
      tree_depth: z.number(),
      by_k: z.record(z.string(), sweepPoint.nullable()),
      by_tree_nodes: z.record(z.string(), sweepPoint.nullable()),
    })
    .nullish(),
});
const streamsFigures = z.record(z.string(), z.object({ tokens_per_s: z.number(), ceiling_tokens_per_s: z.number() }));
const distributedReport = z.object({
  target: z.string(),
  drafters: z.record(z.string(), drafterFigures),
  concurrency: streamsFigures.optional(),
  concurrency_speculative: z.object({ drafter: z.string(), by_streams: streamsFigures }).nullish(),
  inproc: z.unknown().optional(),
});

function lineChart(
  title: string,
  rows: readonly Record<string, string | number>[],
  x: { field: string; title: string },
  y: { field: string; title: string },
  series: string,
): TopLevelSpec {
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title,
    width: WIDTH,
    height: HEIGHT,
    data: { values: rows as Record<string, string | number>[] },
    mark: { type: "line", point: true },
    encoding: {
      x: { field: x.field, type: "quantitative", title: x.title, axis: { tickMinStep: 1 } },
      y: { field: y.field, type: "quantitative", title: y.title },
      color: { field: series, type: "nominal", title: null, legend: { labelLimit: LEGEND_LABEL_LIMIT } },
    },
  };
}

/** Acceptance rate at each draft position (tree depth for tree entries), one line per drafter. */
function acceptanceByPosition(drafters: Record<string, z.infer<typeof drafterFigures>>, scope: string): Chart[] {
  const rows = Object.entries(drafters).flatMap(([drafter, f]) =>
    (f.acceptance_per_position ?? []).map((acceptance, i) => ({ drafter, position: i + 1, acceptance })),
  );
  if (rows.length === 0) return [];
  return [
    {
      name: `${scope}-acceptance-by-position`,
      spec: lineChart(
        `Acceptance by draft position (${scope})`,
        rows,
        { field: "position", title: "draft position (tree depth)" },
        { field: "acceptance", title: "acceptance rate" },
        "drafter",
      ),
    },
  ];
}

/** Measured S beside the ideal S* at each point of a sweep. */
function speedupSweep(
  name: string,
  title: string,
  points: Record<string, z.infer<typeof sweepPoint> | null>,
  xTitle: string,
): Chart[] {
  const rows = Object.entries(points).flatMap(([x, p]) =>
    p
      ? [
          { x: Number(x), figure: "S (measured)", speedup: p.speedup },
          { x: Number(x), figure: "S* (ideal, from measured costs)", speedup: p.ideal_speedup },
        ]
      : [],
  );
  if (rows.length === 0) return [];
  return [
    {
      name,
      spec: lineChart(title, rows, { field: "x", title: xTitle }, { field: "speedup", title: "speedup" }, "figure"),
    },
  ];
}

export function inprocCharts(report: unknown, scope = "inproc"): Chart[] {
  const parsed = inprocReport.safeParse(report);
  if (!parsed.success) return [];
  const { drafters, sweep } = parsed.data;
  return [
    ...acceptanceByPosition(drafters, scope),
    ...(sweep
      ? [
          ...speedupSweep(
            `${scope}-speedup-by-k`,
            `S and S* by K, ${sweep.drafter} (${scope})`,
            sweep.by_k,
            "K (draft tokens per round)",
          ),
          ...speedupSweep(
            `${scope}-speedup-by-tree-size`,
            `S and S* by tree size, ${sweep.drafter}, ${sweep.tree_width} children per node, ${sweep.tree_depth} deep (${scope})`,
            sweep.by_tree_nodes,
            "tree nodes per round",
          ),
        ]
      : []),
  ];
}

/** Aggregate tokens/s at each number of concurrent streams, plain and speculative, against the batched ceiling. */
function throughputByStreams(report: z.infer<typeof distributedReport>): Chart[] {
  if (!report.concurrency) return [];
  const rows = Object.entries(report.concurrency).flatMap(([n, f]) => [
    { streams: Number(n), series: "plain", tokens_per_s: f.tokens_per_s },
    { streams: Number(n), series: "batched-forward ceiling", tokens_per_s: f.ceiling_tokens_per_s },
  ]);
  const speculative = report.concurrency_speculative;
  if (speculative) {
    for (const [n, f] of Object.entries(speculative.by_streams)) {
      rows.push({ streams: Number(n), series: `speculative (${speculative.drafter})`, tokens_per_s: f.tokens_per_s });
    }
  }
  const spec = lineChart(
    `Tokens/s by concurrent streams, ${report.target}`,
    rows,
    { field: "streams", title: "concurrent streams" },
    { field: "tokens_per_s", title: "tokens/s (all streams)" },
    "series",
  );
  return [{ name: "distributed-throughput-by-streams", spec }];
}

const ROUND_PARTS: Record<string, string> = {
  draft_compute: "draft compute",
  draft_transport: "gateway ↔ draft hop",
  queue_wait: "push to replica",
  verify_compute: "verify compute",
  result_return: "reply to gateway",
  gateway: "gateway",
};

/** Where a mean speculative round's time goes, per drafter: compute and each hop, stacked. */
function roundTime(report: z.infer<typeof distributedReport>): Chart[] {
  const rows = Object.entries(report.drafters).flatMap(([drafter, f]) =>
    Object.entries(f.overhead?.round_parts_mean_ms ?? {}).map(([part, ms], order) => ({
      drafter,
      part: ROUND_PARTS[part] ?? part,
      order,
      ms: Math.max(0, ms),
    })),
  );
  if (rows.length === 0) return [];
  return [
    {
      name: "distributed-round-time",
      spec: {
        $schema: "https://vega.github.io/schema/vega-lite/v6.json",
        title: `Where a speculative round's time goes (mean ms, single stream), ${report.target}`,
        width: WIDTH,
        height: { step: 28 },
        data: { values: rows },
        mark: "bar",
        encoding: {
          y: { field: "drafter", type: "nominal", title: null },
          x: { field: "ms", type: "quantitative", title: "ms per round", stack: "zero" },
          color: {
            field: "part",
            type: "nominal",
            title: null,
            sort: Object.values(ROUND_PARTS),
            legend: { labelLimit: LEGEND_LABEL_LIMIT },
          },
          order: { field: "order" },
        },
      },
    },
  ];
}

export function distributedCharts(report: unknown): Chart[] {
  const parsed = distributedReport.safeParse(report);
  if (!parsed.success) return [];
  return [
    ...acceptanceByPosition(parsed.data.drafters, "distributed"),
    ...throughputByStreams(parsed.data),
    ...roundTime(parsed.data),
    ...inprocCharts(parsed.data.inproc),
  ];
}

/** Every chart a report of `mode` holds. */
export function chartsFor(mode: string, report: unknown): Chart[] {
  if (mode === "inproc") return inprocCharts(report);
  if (mode === "distributed") return distributedCharts(report);
  return [];
}
