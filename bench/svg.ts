/**
 * Renders Vega-Lite specifications to SVG in this process: Vega's headless view draws SVG without a canvas or a
 * browser, so the charts come out of the benchmark run itself.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse, View } from "vega";
import { compile } from "vega-lite";
import type { Chart } from "./charts.ts";

export async function renderSvg(chart: Chart): Promise<string> {
  const view = new View(parse(compile(chart.spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes each chart as `<dir>/<name>.svg`; returns the paths written. */
export async function writeCharts(charts: readonly Chart[], dir: string): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const paths: string[] = [];
  for (const chart of charts) {
    const path = join(dir, `${chart.name}.svg`);
    writeFileSync(path, await renderSvg(chart));
    paths.push(path);
  }
  return paths;
}
