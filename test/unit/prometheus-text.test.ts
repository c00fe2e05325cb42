import assert from "node:assert/strict";
import { test } from "node:test";
import { parsePrometheusText, sumSamples } from "../../services/telemetry/prometheus-text.ts";

const TEXT = `# HELP target_info Target metadata
# TYPE target_info gauge
target_info{service_name="specgate-gateway"} 1
# HELP specgate_requests_total Finished requests
# UNIT specgate_requests_total {request}
# TYPE specgate_requests_total counter
specgate_requests_total{specgate_tenant="a \\"quoted\\" one",specgate_request_status="OK"} 3
specgate_requests_total{specgate_tenant="back\\\\slash\\nnewline",specgate_request_status="OK"} 2 1700000000000
# TYPE specgate_round_k histogram
specgate_round_k_bucket{le="+Inf"} 4
specgate_round_k_sum 1.5e1
untyped_metric NaN
`;

test("parses names, labels with escapes, values, timestamps and TYPE lines", () => {
  const scrape = parsePrometheusText(TEXT);
  assert.equal(scrape.types.get("specgate_requests_total"), "counter");
  assert.equal(scrape.types.get("specgate_round_k"), "histogram");
  assert.deepEqual(scrape.samples[1], {
    name: "specgate_requests_total",
    labels: { specgate_tenant: 'a "quoted" one', specgate_request_status: "OK" },
    value: 3,
  });
  assert.equal(scrape.samples[2].labels.specgate_tenant, "back\\slash\nnewline");
  assert.equal(scrape.samples[2].value, 2);
  assert.equal(scrape.samples[3].labels.le, "+Inf");
  assert.equal(sumSamples(scrape, "specgate_round_k_sum"), 15);
  assert.ok(Number.isNaN(scrape.samples[5].value));
  assert.equal(sumSamples(scrape, "specgate_requests_total", { specgate_request_status: "OK" }), 5);
  assert.equal(sumSamples(scrape, "specgate_requests_total", { specgate_tenant: "nobody" }), 0);
});

test("rejects malformed lines instead of guessing", () => {
  assert.throws(() => parsePrometheusText('metric{label="unterminated} 1'), /unterminated|malformed/);
  assert.throws(() => parsePrometheusText("metric{label=1} 1"), /malformed label set/);
  assert.throws(() => parsePrometheusText("metric"), /not a sample value/);
  assert.throws(() => parsePrometheusText("9metric 1"), /malformed sample line/);
});
