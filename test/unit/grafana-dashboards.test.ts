import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { packageDefinition } from "../../proto/load.ts";
import { ATTR, statAttribute } from "../../services/telemetry/attributes.ts";
import { prometheusSeriesNames } from "../../services/telemetry/metrics.ts";
import { ROUND_SPAN_NAME } from "../../services/telemetry/request-trace.ts";
import { VERIFY_BATCH_SPAN_NAME, VERIFY_JOB_SPAN_NAME } from "../../services/telemetry/verify-trace.ts";
import {
  DASHBOARD_DIR,
  legendLabels,
  loadDashboards,
  panelLinks,
  panelQueries,
  promqlNames,
  traceqlInLink,
  traceqlNames,
  variableQueries,
} from "../support/dashboards.ts";

const PROVISIONING = join(DASHBOARD_DIR, "..", "provisioning");
const dashboards = loadDashboards();

/** Label names the telemetry library can put on a series (attribute names as a Prometheus scrape writes them). */
const METRIC_LABELS = new Set([
  ...Object.values(ATTR).map((name) => name.replace(/[^a-zA-Z0-9_]/g, "_")),
  "le",
  "job",
  "instance",
]);

/** Span attributes the library sets: its own names plus every field of the statistics returned to the client. */
const statsType = packageDefinition["specgate.v1.SpeculationStats"] as unknown as {
  type: { field: { name: string }[] };
};
const SPAN_ATTRIBUTES = new Set([...Object.values(ATTR), ...statsType.type.field.map((f) => statAttribute(f.name))]);
const SPAN_NAMES = new Set([ROUND_SPAN_NAME, VERIFY_BATCH_SPAN_NAME, VERIFY_JOB_SPAN_NAME]);

function provisionedDatasources(): Map<string, string> {
  const file = parse(readFileSync(join(PROVISIONING, "datasources", "datasources.yaml"), "utf8")) as {
    datasources: { uid: string; type: string }[];
  };
  return new Map(file.datasources.map((source) => [source.uid, source.type]));
}

test("there are dashboards, each with a unique uid and title", () => {
  assert.ok(dashboards.length >= 3);
  assert.equal(new Set(dashboards.map((d) => d.uid)).size, dashboards.length);
  assert.equal(new Set(dashboards.map((d) => d.title)).size, dashboards.length);
});

test("every query names a provisioned data source of its kind", () => {
  const sources = provisionedDatasources();
  assert.deepEqual([...sources.values()].sort(), ["prometheus", "tempo"]);
  for (const dashboard of dashboards) {
    for (const query of [...panelQueries(dashboard), ...variableQueries(dashboard)]) {
      const uid = query.datasource?.uid ?? "";
      assert.ok(sources.has(uid), `${query.where}: data source ${uid} is not provisioned`);
      assert.equal(sources.get(uid), query.datasource?.type, `${query.where}: data source type`);
      assert.notEqual(query.text.trim(), "", `${query.where}: empty query`);
    }
  }
});

test("every metric and label a PromQL query uses is one the telemetry library defines", () => {
  const defined = prometheusSeriesNames();
  let checked = 0;
  for (const dashboard of dashboards) {
    for (const query of [...panelQueries(dashboard), ...variableQueries(dashboard)]) {
      if (query.datasource?.type !== "prometheus") continue;
      const { metrics, labels } = promqlNames(query.text);
      assert.ok(metrics.size > 0, `${query.where}: no metric found in ${query.text}`);
      for (const metric of metrics) assert.ok(defined.has(metric), `${query.where}: unknown metric ${metric}`);
      for (const label of [...labels, ...legendLabels(query.legendFormat)]) {
        assert.ok(METRIC_LABELS.has(label), `${query.where}: unknown label ${label}`);
      }
      checked++;
    }
  }
  assert.ok(checked >= 20, `${checked} PromQL queries checked`);
});

test("every TraceQL query (panels and links) uses span names and attributes the services set", () => {
  let checked = 0;
  for (const dashboard of dashboards) {
    const traceql = [
      ...panelQueries(dashboard)
        .filter((query) => query.datasource?.type === "tempo")
        .map((query) => ({ where: query.where, text: query.text })),
      ...panelLinks(dashboard).flatMap((link) => traceqlInLink(link.url).map((text) => ({ where: link.where, text }))),
    ];
    for (const query of traceql) {
      const { spanAttributes, spanNames } = traceqlNames(query.text);
      for (const attribute of spanAttributes) {
        assert.ok(SPAN_ATTRIBUTES.has(attribute), `${query.where}: unknown span attribute ${attribute}`);
      }
      for (const name of spanNames) assert.ok(SPAN_NAMES.has(name), `${query.where}: unknown span name ${name}`);
      checked++;
    }
  }
  assert.ok(checked >= 10, `${checked} TraceQL queries checked`);
});

test("every panel that counts requests links to their traces", () => {
  for (const dashboard of dashboards) {
    const linked = new Set(panelLinks(dashboard).map((link) => link.where));
    for (const query of panelQueries(dashboard)) {
      if (query.datasource?.type !== "prometheus") continue;
      assert.ok(linked.has(query.where), `${query.where}: no link to traces`);
    }
  }
});

test("the checker itself finds names in PromQL and rejects unknown ones", () => {
  const { metrics, labels } = promqlNames(
    'histogram_quantile(0.95, sum by (le, specgate_replica) (rate(specgate_verify_queue_wait_bucket{specgate_replica=~"$r"}[$__rate_interval]))) / ignoring(le) group_left sum(up_typo)',
  );
  assert.deepEqual([...metrics].sort(), ["specgate_verify_queue_wait_bucket", "up_typo"]);
  assert.deepEqual([...labels].sort(), ["le", "specgate_replica"]);
  assert.ok(!prometheusSeriesNames().has("up_typo"));
  assert.deepEqual(
    [...traceqlNames('{name="specgate.round" && span.specgate.alpha < 0.3}').spanAttributes],
    ["specgate.alpha"],
  );
});
