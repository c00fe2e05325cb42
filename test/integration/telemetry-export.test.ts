import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { get } from "node:http";
import { connect, createServer } from "node:net";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { ATTR } from "../../services/telemetry/attributes.ts";
import { parsePrometheusText, sumSamples } from "../../services/telemetry/prometheus-text.ts";
import { ROUND_SPAN_NAME } from "../../services/telemetry/request-trace.ts";
import { startTelemetry } from "../../services/telemetry/start.ts";
import { VERIFY_BATCH_SPAN_NAME, VERIFY_JOB_SPAN_NAME } from "../../services/telemetry/verify-trace.ts";
import { OtlpReceiver } from "../support/otlp-receiver.ts";
import { freePort } from "../support/ports.ts";
import { expectedStatAttributes, SCRIPT, scriptedRequest } from "../support/telemetry-fixtures.ts";

const SERVICE = new URL("../support/telemetry-service.ts", import.meta.url).pathname;
const METHOD = "specgate.v1.Gateway/Generate";

interface RunningService {
  info: { metricsUrl: string | undefined; tracing: boolean; traceId: string };
  /** Closes stdin (the service shuts telemetry down, flushing exporters) and waits for the exit. */
  stop(): Promise<number | null>;
}

async function runService(serviceName: string, otelEnv: Record<string, string>): Promise<RunningService> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("OTEL_") && value !== undefined) env[key] = value;
  }
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", SERVICE, serviceName], {
    env: { ...env, OTEL_BSP_SCHEDULE_DELAY: "50", ...otelEnv },
    stdio: ["pipe", "pipe", "inherit"],
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const first = await Promise.race([
    new Promise<string>((resolve) => lines.once("line", resolve)),
    exited.then((code) => {
      throw new Error(`${serviceName} exited with ${code} before it was ready`);
    }),
  ]);
  return {
    info: JSON.parse(first),
    stop: async () => {
      child.stdin?.end();
      return exited;
    },
  };
}

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, { agent: false }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
    }).on("error", reject);
  });
}

async function scrape(url: string) {
  const response = await fetch(url);
  assert.equal(response.status, 200);
  return parsePrometheusText(await response.text());
}

describe("OTLP/HTTP JSON export of a request to a real receiver", { timeout: 60_000 }, () => {
  let receiver: OtlpReceiver;
  before(async () => {
    receiver = await OtlpReceiver.start();
  });
  after(() => receiver.close());

  test("the trace, its attributes and the metrics arrive; the scrape endpoint carries the same metrics", async () => {
    const gateway = await runService("specgate-gateway", {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.httpUrl,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    });
    assert.equal(gateway.info.tracing, true);
    assert.match(gateway.info.metricsUrl ?? "", /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);

    const scraped = await scrape(gateway.info.metricsUrl as string);
    const acme = { specgate_tenant: "acme", gen_ai_request_model: "stories260k", specgate_drafter: "int4" };
    assert.equal(sumSamples(scraped, "specgate_spec_decode_num_draft_tokens_total", acme), 14);
    assert.equal(sumSamples(scraped, "specgate_spec_decode_num_accepted_tokens_total", acme), 7);
    assert.equal(sumSamples(scraped, "specgate_verify_batch_size_count", { specgate_replica: "0" }), SCRIPT.length);
    assert.equal(sumSamples(scraped, "target_info", { service_name: "specgate-gateway" }), 1);

    assert.equal(await gateway.stop(), 0);
    await receiver.waitFor(() => receiver.spans().length > 0 && receiver.metrics().length > 0);

    const spans = receiver.spans().filter((span) => span.traceId === gateway.info.traceId);
    const [request] = spans.filter((span) => span.name === METHOD);
    assert.equal(request.service, "specgate-gateway");
    assert.equal(request.parentSpanId, "");
    const finished = scriptedRequest();
    for (const [name, value] of expectedStatAttributes(finished.stats)) {
      assert.deepEqual(request.attributes[name], value, name);
    }
    assert.equal(request.attributes[ATTR.tenant], "acme");
    assert.equal(request.attributes[ATTR.rpcSystem], "grpc");
    const rounds = spans.filter((span) => span.name === ROUND_SPAN_NAME);
    assert.equal(rounds.length, SCRIPT.length);
    for (const round of rounds) assert.equal(round.parentSpanId, request.spanId);
    assert.deepEqual(
      rounds.map((round) => round.attributes[ATTR.accepted]).sort(),
      SCRIPT.map(([, , accepted]) => accepted).sort(),
    );
    const jobs = spans.filter((span) => span.name === VERIFY_JOB_SPAN_NAME);
    assert.equal(jobs.length, SCRIPT.length);
    const roundIds = new Set(rounds.map((round) => round.spanId));
    for (const job of jobs) assert.ok(roundIds.has(job.parentSpanId));
    const batches = receiver.spans().filter((span) => span.name === VERIFY_BATCH_SPAN_NAME);
    assert.deepEqual(new Set(batches.flatMap((batch) => batch.links.map((link) => link.spanId))), roundIds);

    const metricNames = new Set(receiver.metrics().map((metric) => metric.name));
    for (const name of [
      "specgate.spec_decode.num_draft_tokens",
      "specgate.spec_decode.num_accepted_tokens",
      "specgate.round.k",
    ]) {
      assert.ok(metricNames.has(name), name);
    }
  });
});

test("three services at once, one per OTLP protocol, each under its own service.name and scrape port", {
  timeout: 60_000,
}, async () => {
  const receiver = await OtlpReceiver.start();
  const protocols = {
    "specgate-gateway": ["grpc", receiver.grpcUrl],
    "specgate-draft": ["http/protobuf", receiver.httpUrl],
    "specgate-target": ["http/json", receiver.httpUrl],
  } as const;
  const services = await Promise.all(
    Object.entries(protocols).map(([name, [protocol, url]]) =>
      // A service name shared through the environment (as one `npm start` shell would) must not merge them.
      runService(name, {
        OTEL_EXPORTER_OTLP_ENDPOINT: url,
        OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
        OTEL_SERVICE_NAME: "shared",
      }),
    ),
  );
  const urls = services.map((service) => service.info.metricsUrl);
  assert.equal(new Set(urls).size, 3);
  const scrapes = await Promise.all(urls.map((url) => scrape(url as string)));
  Object.keys(protocols).forEach((name, i) => {
    assert.equal(sumSamples(scrapes[i], "target_info", { service_name: name }), 1);
  });
  for (const service of services) assert.equal(await service.stop(), 0);

  const received = (protocol: string, signal: string, name: string) =>
    receiver.exports.some((e) => e.protocol === protocol && e.signal === signal && e.body.includes(name));
  await receiver.waitFor(
    () =>
      received("grpc", "traces", "specgate-gateway") &&
      received("http/protobuf", "traces", "specgate-draft") &&
      received("http/json", "traces", "specgate-target"),
  );
  assert.ok(received("grpc", "traces", "specgate.alpha"), "request attributes travel over OTLP/gRPC");
  assert.ok(received("grpc", "metrics", "specgate.spec_decode.num_accepted_tokens"));
  assert.ok(received("http/protobuf", "metrics", "specgate.verify.batch.size"));
  assert.deepEqual(
    receiver.spans().map((span) => [span.service, span.name]),
    [["specgate-target", VERIFY_BATCH_SPAN_NAME]],
  );
  await receiver.close();
});

describe("in-process start-up", { timeout: 30_000 }, () => {
  test("no OTLP endpoint: tracing off, scrape endpoint on", async () => {
    const telemetry = await startTelemetry({ serviceName: "specgate-draft", metrics: { port: 0 }, env: {} });
    assert.equal(telemetry.tracing, false);
    telemetry.metrics.recordKvEvictions("draft", "0");
    const scraped = await scrape(telemetry.metricsUrl as string);
    assert.equal(sumSamples(scraped, "specgate_kv_cache_evictions_total", { specgate_cache_role: "draft" }), 1);
    await telemetry.shutdown();
  });

  test("OTEL_SDK_DISABLED=true: no endpoint at all", async () => {
    const telemetry = await startTelemetry({
      serviceName: "specgate-draft",
      metrics: { port: 0 },
      env: { OTEL_SDK_DISABLED: "true" },
    });
    assert.equal(telemetry.tracing, false);
    assert.equal(telemetry.metricsUrl, undefined);
    telemetry.metrics.recordKvEvictions("draft", "0");
    await telemetry.shutdown();
  });

  test("shutdown frees the scrape port even with a scraper's connection still open", async () => {
    const port = await freePort();
    for (let i = 0; i < 3; i++) {
      const telemetry = await startTelemetry({
        serviceName: "specgate-target",
        replica: 1,
        metrics: { port },
        env: {},
      });
      assert.equal(telemetry.metricsUrl, `http://127.0.0.1:${port}/metrics`);
      const scraped = await httpGet(telemetry.metricsUrl as string);
      assert.equal(scraped.status, 200);
      assert.match(scraped.body, /target_info\{.*specgate_replica="1"/);
      assert.equal((await httpGet(`http://127.0.0.1:${port}/other`)).status, 404);
      // An idle connection, as a keep-alive scraper leaves between scrapes.
      const idle = connect(port, "127.0.0.1");
      await once(idle, "connect");
      const closedByServer = once(idle, "close");
      await telemetry.shutdown();
      await closedByServer;
    }
  });

  test("a busy port fails start-up with a message naming it", async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as { port: number }).port;
    await assert.rejects(
      startTelemetry({ serviceName: "specgate-gateway", metrics: { port }, env: {} }),
      new RegExp(`127\\.0\\.0\\.1:${port} \\(EADDRINUSE\\)`),
    );
    blocker.close();
    // The failed start left nothing behind: telemetry can start again.
    const telemetry = await startTelemetry({ serviceName: "specgate-gateway", metrics: { port: 0 }, env: {} });
    await telemetry.shutdown();
  });
});
