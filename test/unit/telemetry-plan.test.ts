import assert from "node:assert/strict";
import { test } from "node:test";
import { telemetryPlan } from "../../services/telemetry/telemetry-plan.ts";

test("nothing configured: no traces, Prometheus endpoint only", () => {
  const plan = telemetryPlan({});
  assert.equal(plan.disabled, false);
  assert.deepEqual(plan.traceExporters, []);
  assert.deepEqual(plan.metricExporters, ["prometheus"]);
});

test("an OTLP endpoint turns on OTLP traces and metrics", () => {
  const plan = telemetryPlan({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" });
  assert.deepEqual(plan.traceExporters, ["otlp"]);
  assert.deepEqual(plan.metricExporters, ["prometheus", "otlp"]);
  assert.equal(plan.otlpMetricsProtocol, "http/protobuf");
});

test("signal-specific endpoints turn on only their signal", () => {
  assert.deepEqual(telemetryPlan({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://x:4318/v1/traces" }).traceExporters, [
    "otlp",
  ]);
  assert.deepEqual(telemetryPlan({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://x:4318/v1/traces" }).metricExporters, [
    "prometheus",
  ]);
  assert.deepEqual(telemetryPlan({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "http://x" }).metricExporters, [
    "prometheus",
    "otlp",
  ]);
});

test("explicit exporter lists win over the endpoint rule", () => {
  const env = {
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
    OTEL_TRACES_EXPORTER: "none",
    OTEL_METRICS_EXPORTER: "prometheus",
  };
  assert.deepEqual(telemetryPlan(env).traceExporters, []);
  assert.deepEqual(telemetryPlan(env).metricExporters, ["prometheus"]);
  assert.deepEqual(telemetryPlan({ OTEL_TRACES_EXPORTER: "console, otlp" }).traceExporters, ["console", "otlp"]);
});

test("OTEL_METRICS_EXPORTER keeps the scrape endpoint unless it says none", () => {
  assert.deepEqual(telemetryPlan({ OTEL_METRICS_EXPORTER: "otlp" }).metricExporters, ["prometheus", "otlp"]);
  assert.deepEqual(telemetryPlan({ OTEL_METRICS_EXPORTER: "console" }).metricExporters, ["prometheus", "console"]);
  assert.deepEqual(telemetryPlan({ OTEL_METRICS_EXPORTER: "none" }).metricExporters, []);
});

test("protocols: the metrics-specific variable wins, unknown values are reported and ignored", () => {
  assert.equal(telemetryPlan({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }).otlpMetricsProtocol, "http/json");
  assert.equal(telemetryPlan({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }).otlpMetricsProtocol, "grpc");
  assert.equal(
    telemetryPlan({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc", OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/json" })
      .otlpMetricsProtocol,
    "http/json",
  );
  const plan = telemetryPlan({ OTEL_EXPORTER_OTLP_PROTOCOL: "carrier-pigeon", OTEL_METRICS_EXPORTER: "statsd" });
  assert.equal(plan.otlpMetricsProtocol, "http/protobuf");
  assert.deepEqual(plan.ignored, ["OTEL_EXPORTER_OTLP_PROTOCOL=carrier-pigeon", "OTEL_METRICS_EXPORTER=statsd"]);
  assert.deepEqual(plan.metricExporters, ["prometheus"]);
});

test("OTEL_SDK_DISABLED=true turns everything off", () => {
  const plan = telemetryPlan({
    OTEL_SDK_DISABLED: "TRUE",
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
    OTEL_TRACES_EXPORTER: "otlp",
  });
  assert.equal(plan.disabled, true);
  assert.deepEqual(plan.traceExporters, []);
  assert.deepEqual(plan.metricExporters, []);
  assert.equal(telemetryPlan({ OTEL_SDK_DISABLED: "false" }).disabled, false);
});
