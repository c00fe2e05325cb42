import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { chartsFor } from "../../bench/charts.ts";
import { formatDuration, progressLine } from "../../bench/progress.ts";
import { renderSvg } from "../../bench/svg.ts";

const inproc = {
  drafters: {
    int4: { acceptance_per_position: [0.82, 0.77, 0.72] },
    "int4/tree": { acceptance_per_position: [0.9, 0.8] },
    ngram: { acceptance_per_position: [0.3] },
  },
  sweep: {
    drafter: "int4",
    tree_width: 3,
    tree_depth: 4,
    by_k: { 1: { speedup: 1.5, ideal_speedup: 1.6 }, 4: { speedup: 2.8, ideal_speedup: 2.9 } },
    by_tree_nodes: { 8: { speedup: 2.5, ideal_speedup: 2.7 } },
  },
};

const distributed = {
  target: "stories260k-x110m",
  drafters: {
    int4: {
      overhead: {
        round_parts_mean_ms: {
          draft_compute: 3,
          draft_transport: 1,
          queue_wait: 0.5,
          verify_compute: 18,
          result_return: 0.6,
          gateway: 0.1,
        },
      },
    },
  },
  concurrency: {
    1: { tokens_per_s: 55, ceiling_tokens_per_s: 60 },
    4: { tokens_per_s: 120, ceiling_tokens_per_s: 140 },
  },
  concurrency_speculative: { drafter: "int4", by_streams: { 1: { tokens_per_s: 130, ceiling_tokens_per_s: 60 } } },
  inproc,
};

describe("benchmark charts", () => {
  it("draws each figure an in-process report holds", () => {
    const charts = chartsFor("inproc", inproc);
    assert.deepEqual(
      charts.map((c) => c.name),
      ["inproc-acceptance-by-position", "inproc-speedup-by-k", "inproc-speedup-by-tree-size"],
    );
    const rows = (charts[0].spec.data as { values: { drafter: string; position: number }[] }).values;
    assert.deepEqual(
      rows.filter((r) => r.drafter === "int4/tree").map((r) => r.position),
      [1, 2],
    );
  });

  it("draws throughput against the ceiling and the round's parts from a distributed report", () => {
    const names = chartsFor("distributed", distributed).map((c) => c.name);
    assert.deepEqual(names, [
      "distributed-throughput-by-streams",
      "distributed-round-time",
      "inproc-acceptance-by-position",
      "inproc-speedup-by-k",
      "inproc-speedup-by-tree-size",
    ]);
  });

  it("leaves out the figures a partial report lacks", () => {
    assert.deepEqual(
      chartsFor("inproc", { drafters: { ngram: {} }, sweep: null }).map((c) => c.name),
      [],
    );
    assert.deepEqual(chartsFor("telemetry", inproc), []);
  });

  it("renders SVG naming the series", async () => {
    const [throughput] = chartsFor("distributed", distributed);
    const svg = await renderSvg(throughput);
    assert.match(svg, /^<svg /);
    for (const label of ["plain", "speculative (int4)", "batched-forward ceiling", "concurrent streams"]) {
      assert.ok(svg.includes(label), `the chart names ${label}`);
    }
  });
});

describe("benchmark progress", () => {
  it("shows a bar, the count and the time left from the mean step", () => {
    assert.equal(progressLine(0, 4, 0), "[--------------------] 0/4 (0%)");
    assert.equal(progressLine(1, 4, 30_000), "[#####---------------] 1/4 (25%, ~1m30s left)");
    assert.equal(progressLine(4, 4, 9_000), "[####################] 4/4 (100%, ~0s left)");
  });

  it("formats durations for a progress line", () => {
    assert.equal(formatDuration(42_400), "42s");
    assert.equal(formatDuration(185_000), "3m05s");
    assert.equal(formatDuration(3_720_000), "1h02m");
  });
});
