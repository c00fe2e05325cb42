/**
 * Reads the Grafana dashboards of deploy/grafana/dashboards and takes their queries apart: the metric and label names
 * each PromQL expression uses, and the span names and attributes each TraceQL query uses. The dashboard tests compare
 * these with what the telemetry library defines (statically) and with what a running stack exports (live).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export const DASHBOARD_DIR = join(import.meta.dirname, "..", "..", "deploy", "grafana", "dashboards");

interface Datasource {
  type?: string;
  uid?: string;
}

interface Target {
  datasource?: Datasource;
  expr?: string;
  query?: string;
  legendFormat?: string;
}

interface Panel {
  type: string;
  title?: string;
  datasource?: Datasource;
  targets?: Target[];
  panels?: Panel[];
  links?: { url: string }[];
  fieldConfig?: { defaults?: { links?: { url: string }[] } };
}

export interface Dashboard {
  file: string;
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; datasource?: Datasource; query?: { query: string } | string }[] };
}

export interface Query {
  where: string;
  datasource: Datasource | undefined;
  text: string;
  legendFormat?: string;
}

export function loadDashboards(): Dashboard[] {
  return readdirSync(DASHBOARD_DIR)
    .filter((file) => file.endsWith(".json"))
    .sort()
    .map((file) => ({ file, ...JSON.parse(readFileSync(join(DASHBOARD_DIR, file), "utf8")) }));
}

function flatPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...flatPanels(panel.panels ?? [])]);
}

/** Every panel query (PromQL or TraceQL) of a dashboard, with the panel it belongs to. */
export function panelQueries(dashboard: Dashboard): Query[] {
  return flatPanels(dashboard.panels).flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({
      where: `${dashboard.file}: ${panel.title}`,
      datasource: target.datasource ?? panel.datasource,
      text: target.expr ?? target.query ?? "",
      legendFormat: target.legendFormat,
    })),
  );
}

/** Template variable queries (`label_values(metric, label)`). */
export function variableQueries(dashboard: Dashboard): Query[] {
  return dashboard.templating.list.map((variable) => ({
    where: `${dashboard.file}: variable ${variable.name}`,
    datasource: variable.datasource,
    text: typeof variable.query === "string" ? variable.query : (variable.query?.query ?? ""),
  }));
}

/** Every link URL of a dashboard's panels (panel links and data links). */
export function panelLinks(dashboard: Dashboard): { where: string; url: string }[] {
  return flatPanels(dashboard.panels).flatMap((panel) =>
    [...(panel.links ?? []), ...(panel.fieldConfig?.defaults?.links ?? [])].map((link) => ({
      where: `${dashboard.file}: ${panel.title}`,
      url: link.url,
    })),
  );
}

const GROUPING = /\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g;
const MATCHERS = /\{([^}]*)\}/g;
const MATCHER = /([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"/g;
const IDENTIFIER = /[a-zA-Z_:][a-zA-Z0-9_:]*/g;
const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "and",
  "or",
  "unless",
]);

/** Metric and label names a PromQL expression uses (`label_values(metric, label)` included). */
export function promqlNames(expr: string): { metrics: Set<string>; labels: Set<string> } {
  const metrics = new Set<string>();
  const labels = new Set<string>();
  const labelValues = /^\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$/.exec(
    expr,
  );
  if (labelValues !== null) {
    metrics.add(labelValues[1]);
    labels.add(labelValues[2]);
    return { metrics, labels };
  }
  let rest = expr.replace(MATCHERS, (_, body: string) => {
    for (const [, name] of body.matchAll(MATCHER)) labels.add(name);
    return " ";
  });
  rest = rest.replace(GROUPING, (_, _keyword: string, list: string) => {
    for (const name of list.split(",")) if (name.trim() !== "") labels.add(name.trim());
    return " ";
  });
  rest = rest.replace(/"(?:[^"\\]|\\.)*"/g, " ").replace(/\[[^\]]*\]/g, " ");
  for (const match of rest.matchAll(IDENTIFIER)) {
    const name = match[0];
    const next = rest.slice((match.index ?? 0) + name.length).trimStart();
    if (next.startsWith("(") || KEYWORDS.has(name)) continue;
    metrics.add(name);
  }
  return { metrics, labels };
}

/** Labels a legend format refers to (`{{label}}`). */
export function legendLabels(legendFormat: string | undefined): string[] {
  return [...(legendFormat ?? "").matchAll(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g)].map((match) => match[1]);
}

/** Span attributes (`span.x.y`), resource attributes and span names a TraceQL query uses. */
export function traceqlNames(query: string): { spanAttributes: Set<string>; spanNames: Set<string> } {
  const spanAttributes = new Set([...query.matchAll(/\bspan\.([a-zA-Z0-9_.]+)/g)].map((match) => match[1]));
  const spanNames = new Set([...query.matchAll(/(?<![.\w])name\s*=\s*"([^"]+)"/g)].map((match) => match[1]));
  return { spanAttributes, spanNames };
}

/** The TraceQL queries inside Grafana Explore links (`/explore?...panes=<JSON>`). */
export function traceqlInLink(url: string): string[] {
  const panes = new URL(url, "http://grafana").searchParams.get("panes");
  if (panes === null) return [];
  const parsed = JSON.parse(panes) as Record<string, { queries: { query?: string }[] }>;
  return Object.values(parsed).flatMap((pane) => pane.queries.map((query) => query.query ?? ""));
}
