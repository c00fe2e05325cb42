import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { Metadata } from "@grpc/grpc-js";
import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { ATTR } from "../../services/telemetry/attributes.ts";
import {
  extractFromCarrier,
  extractFromMetadata,
  injectIntoCarrier,
  injectIntoMetadata,
} from "../../services/telemetry/propagation.ts";
import { ROUND_EVENT_NAME, ROUND_SPAN_NAME, startRequestTrace } from "../../services/telemetry/request-trace.ts";
import { roundAttributes } from "../../services/telemetry/span-attributes.ts";
import { startTelemetry, type Telemetry } from "../../services/telemetry/start.ts";
import {
  DEQUEUED_EVENT_NAME,
  startVerifyBatch,
  VERIFY_BATCH_SPAN_NAME,
  VERIFY_JOB_SPAN_NAME,
} from "../../services/telemetry/verify-trace.ts";
import {
  expectedStatAttributes,
  LABELS,
  SCRIPT,
  scriptedRequest,
  scriptedRound,
} from "../support/telemetry-fixtures.ts";

const METHOD = "specgate.v1.Gateway/Generate";
const GRPC = { protocol: "grpc", method: METHOD } as const;
const NO_METRICS_ENDPOINT = { OTEL_METRICS_EXPORTER: "none" };

function byName(spans: ReadableSpan[], name: string): ReadableSpan[] {
  return spans.filter((span) => span.name === name);
}

describe("with tracing on (in-memory exporter)", () => {
  const exporter = new InMemorySpanExporter();
  const processor = new SimpleSpanProcessor({ exporter });
  // Export waits for the resource detectors, so spans arrive asynchronously.
  const finishedSpans = async () => {
    await processor.forceFlush();
    return exporter.getFinishedSpans();
  };
  let telemetry: Telemetry;

  before(async () => {
    telemetry = await startTelemetry({
      serviceName: "specgate-gateway",
      metrics: { port: 0 },
      env: NO_METRICS_ENDPOINT,
      spanProcessors: [processor],
    });
  });
  after(() => telemetry.shutdown());
  afterEach(() => exporter.reset());

  test("one request: client → request span → round spans → verify job spans, batch span linked to each round", async () => {
    assert.equal(telemetry.tracing, true);
    const tracer = trace.getTracer("test-client");
    const clientSpan = tracer.startSpan("client call", { kind: SpanKind.CLIENT });
    const metadata = injectIntoMetadata(new Metadata(), trace.setSpan(extractFromCarrier(undefined), clientSpan));
    assert.match(String(metadata.get("traceparent")[0]), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);

    const request = startRequestTrace({
      transport: GRPC,
      parent: extractFromMetadata(metadata),
      labels: LABELS,
      parameters: { maxTokens: 32, temperature: 0, seed: 7 },
      roundSpans: true,
    });
    const roundCarriers: Record<string, string>[] = [];
    SCRIPT.forEach((_, i) => {
      const round = request.startRound();
      const carrier = injectIntoCarrier(round.context);
      roundCarriers.push(carrier);
      // Another request's round shares the batch: the batch span must link to both.
      const other = { traceparent: `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01` };
      const batch = startVerifyBatch({
        replica: "0",
        jobs: [
          { trace: carrier, enqueuedAtMs: Date.now() - 20 },
          { trace: other, enqueuedAtMs: Date.now() - 10 },
        ],
      });
      assert.ok(batch.queueWaitsMs[0] >= 20 && batch.queueWaitsMs[1] >= 10);
      batch.end([
        { proposed: SCRIPT[i][1], accepted: SCRIPT[i][2] },
        { proposed: 1, accepted: 1 },
      ]);
      round.end(scriptedRound(i));
    });
    const finished = scriptedRequest();
    request.end(finished);
    clientSpan.end();

    const spans = await finishedSpans();
    const [requestSpan] = byName(spans, METHOD);
    const traceId = clientSpan.spanContext().traceId;
    assert.equal(requestSpan.kind, SpanKind.SERVER);
    assert.equal(requestSpan.spanContext().traceId, traceId);
    assert.equal(requestSpan.parentSpanContext?.spanId, clientSpan.spanContext().spanId);
    assert.equal(requestSpan.resource.attributes["service.name"], "specgate-gateway");

    // Request attributes: labels, gRPC and gen_ai conventions, and every returned statistic unchanged.
    const a = requestSpan.attributes;
    assert.equal(a[ATTR.rpcSystem], "grpc");
    assert.equal(a[ATTR.rpcMethod], METHOD);
    assert.equal(a[ATTR.rpcStatus], "OK");
    assert.equal(a[ATTR.tenant], "acme");
    assert.equal(a[ATTR.model], "stories260k");
    assert.equal(a[ATTR.drafter], "int4");
    assert.equal(a[ATTR.maxTokens], 32);
    assert.equal(a[ATTR.inputTokens], 9);
    assert.equal(a[ATTR.outputTokens], finished.stats.generated_tokens);
    assert.deepEqual(a[ATTR.finishReasons], ["length"]);
    for (const [name, value] of expectedStatAttributes(finished.stats)) assert.deepEqual(a[name], value, name);
    assert.deepEqual(a["specgate.round_timings.queue_wait_ms"], [0.25, 0.5, 0.75, 1]);
    assert.equal(a["specgate.alpha"], 7 / 14);
    assert.equal(requestSpan.status.code, SpanStatusCode.UNSET);

    const rounds = byName(spans, ROUND_SPAN_NAME);
    assert.equal(rounds.length, SCRIPT.length);
    rounds.forEach((span, i) => {
      assert.equal(span.parentSpanContext?.spanId, requestSpan.spanContext().spanId);
      assert.equal(span.spanContext().traceId, traceId);
      const [k, proposed, accepted] = SCRIPT[i];
      assert.equal(span.attributes[ATTR.round], i + 1);
      assert.equal(span.attributes[ATTR.k], k);
      assert.equal(span.attributes[ATTR.proposed], proposed);
      assert.equal(span.attributes[ATTR.accepted], accepted);
      assert.equal(span.attributes[ATTR.firstRejection], accepted < proposed ? accepted + 1 : undefined);
      assert.equal(span.attributes[ATTR.nextTokenKind], accepted === proposed ? "bonus" : "correction");
      assert.equal(span.attributes[ATTR.nextToken], 100 + i);
      assert.equal(span.attributes[ATTR.replica], "0");
      assert.equal(span.attributes[ATTR.batchSize], 2);
      assert.equal(span.attributes[ATTR.queueWaitMs], 0.25 * (i + 1));
      assert.equal(span.attributes[ATTR.draftMs], 1.5);
      assert.equal(span.attributes[ATTR.verifyMs], 3);
    });

    // Each round's verify job span is in the request's trace, under its round, starting at enqueue time.
    const jobs = byName(spans, VERIFY_JOB_SPAN_NAME).filter((s) => s.spanContext().traceId === traceId);
    assert.equal(jobs.length, SCRIPT.length);
    const batches = byName(spans, VERIFY_BATCH_SPAN_NAME);
    assert.equal(batches.length, SCRIPT.length);
    jobs.forEach((job, i) => {
      assert.equal(job.kind, SpanKind.CONSUMER);
      assert.equal(job.parentSpanContext?.spanId, rounds[i].spanContext().spanId);
      assert.ok((job.attributes[ATTR.queueWaitMs] as number) >= 20);
      assert.equal(job.attributes[ATTR.accepted], SCRIPT[i][2]);
      assert.equal(job.events[0].name, DEQUEUED_EVENT_NAME);
      assert.equal(job.links[0].context.spanId, batches[i].spanContext().spanId);
    });
    batches.forEach((batch, i) => {
      assert.equal(batch.parentSpanContext, undefined, "a batch starts its own trace");
      assert.equal(batch.attributes[ATTR.batchSize], 2);
      const linked = batch.links.map((link) => link.context.spanId);
      assert.deepEqual(linked, [rounds[i].spanContext().spanId, "cd".repeat(8)]);
      assert.equal(roundCarriers[i].traceparent.split("-")[2], rounds[i].spanContext().spanId);
    });
  });

  test("rounds as events on the request span", async () => {
    const request = startRequestTrace({ transport: GRPC, labels: LABELS, roundSpans: false });
    for (let i = 0; i < SCRIPT.length; i++) {
      const round = request.startRound();
      assert.equal(
        trace.getSpan(round.context)?.spanContext().spanId,
        trace.getSpan(request.context)?.spanContext().spanId,
      );
      round.end(scriptedRound(i));
    }
    request.end(scriptedRequest());
    const spans = await finishedSpans();
    assert.equal(spans.length, 1);
    const events = spans[0].events.filter((event) => event.name === ROUND_EVENT_NAME);
    assert.deepEqual(
      events.map((event) => [
        event.attributes?.[ATTR.k],
        event.attributes?.[ATTR.proposed],
        event.attributes?.[ATTR.accepted],
      ]),
      SCRIPT.map((round) => [...round]),
    );
  });

  test("a round cut short ends with its request, marked abandoned", async () => {
    const request = startRequestTrace({ transport: GRPC, labels: LABELS, roundSpans: true });
    request.startRound().end(scriptedRound(0));
    request.startRound();
    request.end(scriptedRequest("CANCELLED"));
    const rounds = byName(await finishedSpans(), ROUND_SPAN_NAME);
    assert.deepEqual(
      rounds.map((span) => span.attributes[ATTR.roundAbandoned]),
      [undefined, true],
    );
  });

  test("a round started before the previous one ended is still marked abandoned when the request is cut short", async () => {
    // The gateway's order: round 2 starts (its proposal request leaves) before round 1 has streamed and ended.
    const request = startRequestTrace({ transport: GRPC, labels: LABELS, roundSpans: true });
    const first = request.startRound();
    request.startRound();
    first.end(scriptedRound(0));
    request.end(scriptedRequest("CANCELLED"));
    const rounds = byName(await finishedSpans(), ROUND_SPAN_NAME);
    assert.deepEqual(
      rounds.map((span) => span.attributes[ATTR.roundAbandoned]),
      [undefined, true],
    );
  });

  test("server faults mark the span as an error, client faults do not", async () => {
    for (const [status, code] of [
      ["DEADLINE_EXCEEDED", SpanStatusCode.ERROR],
      ["UNAVAILABLE", SpanStatusCode.ERROR],
      ["INVALID_ARGUMENT", SpanStatusCode.UNSET],
      ["CANCELLED", SpanStatusCode.UNSET],
    ] as const) {
      exporter.reset();
      startRequestTrace({ transport: GRPC, labels: LABELS }).end(scriptedRequest(status));
      const [span] = await finishedSpans();
      assert.equal(span.status.code, code, status);
      assert.equal(span.attributes[ATTR.rpcStatus], status);
    }
  });

  test("an HTTP request's span follows HTTP's conventions: method and route, status code, 5xx or failed stream as errors", async () => {
    const http = { protocol: "http", method: "POST", route: "/v1/completions" } as const;
    for (const [status, httpStatusCode, errorType] of [
      ["OK", 200, undefined],
      ["INVALID_ARGUMENT", 400, undefined],
      ["CANCELLED", 499, undefined],
      ["UNAVAILABLE", 503, "503"],
      // A stream's 200 went out before its deadline passed: the gRPC status names the error.
      ["DEADLINE_EXCEEDED", 200, "DEADLINE_EXCEEDED"],
    ] as const) {
      exporter.reset();
      startRequestTrace({ transport: http, labels: LABELS }).end({ ...scriptedRequest(status), httpStatusCode });
      const [span] = await finishedSpans();
      assert.equal(span.name, "POST /v1/completions");
      assert.equal(span.kind, SpanKind.SERVER);
      assert.equal(span.attributes[ATTR.httpMethod], "POST");
      assert.equal(span.attributes[ATTR.httpRoute], "/v1/completions");
      assert.equal(span.attributes[ATTR.httpStatus], httpStatusCode);
      assert.equal(span.attributes[ATTR.requestStatus], status);
      assert.equal(span.attributes[ATTR.errorType], errorType, status);
      assert.equal(span.status.code, errorType === undefined ? SpanStatusCode.UNSET : SpanStatusCode.ERROR, status);
      for (const grpcOnly of [ATTR.rpcSystem, ATTR.rpcMethod, ATTR.rpcStatus]) {
        assert.equal(span.attributes[grpcOnly], undefined, `no ${grpcOnly} on an HTTP span`);
      }
      assert.equal(span.attributes[ATTR.genAiOperation], "text_completion");
    }
  });
});

describe("with tracing off (no exporter configured)", () => {
  let telemetry: Telemetry;
  before(async () => {
    telemetry = await startTelemetry({
      serviceName: "specgate-target",
      metrics: { port: 0 },
      env: NO_METRICS_ENDPOINT,
    });
  });
  after(() => telemetry.shutdown());

  test("spans are no-ops and nothing is propagated", () => {
    assert.equal(telemetry.tracing, false);
    const request = startRequestTrace({ transport: GRPC, labels: LABELS });
    assert.equal(trace.getSpan(request.context), undefined);
    const round = request.startRound();
    assert.deepEqual(injectIntoCarrier(round.context), {});
    const metadata = injectIntoMetadata(new Metadata(), round.context);
    assert.deepEqual(metadata.getMap(), {});
    const batch = startVerifyBatch({ replica: "1", jobs: [{ enqueuedAtMs: Date.now() + 50 }] });
    assert.deepEqual(batch.queueWaitsMs, [0], "a job from a clock ahead of ours waited 0, not a negative time");
    batch.end();
    round.end(scriptedRound(0));
    request.end(scriptedRequest());
  });
});

test("telemetry runs once per process and can start again after shutdown", async () => {
  const first = await startTelemetry({ serviceName: "specgate-draft", metrics: { port: 0 }, env: NO_METRICS_ENDPOINT });
  await assert.rejects(
    startTelemetry({ serviceName: "specgate-gateway", metrics: { port: 0 }, env: NO_METRICS_ENDPOINT }),
    /already running in this process for specgate-draft/,
  );
  await first.shutdown();
  const exporter = new InMemorySpanExporter();
  const processor = new SimpleSpanProcessor({ exporter });
  const second = await startTelemetry({
    serviceName: "specgate-gateway",
    metrics: { port: 0 },
    env: NO_METRICS_ENDPOINT,
    spanProcessors: [processor],
  });
  startRequestTrace({ transport: GRPC, labels: LABELS }).end(scriptedRequest());
  await processor.forceFlush();
  assert.equal(exporter.getFinishedSpans().length, 1);
  await second.shutdown();
});

test("a tree round's span: bonus when its path reached a leaf, else the depth of the first rejection", () => {
  // Six nodes, a path of two: whether that path ended at a leaf is the replica's word (VerifyResult.bonus).
  const round = { ...scriptedRound(0), k: 3, proposed: 6, accepted: 2 };
  const leaf = roundAttributes({ ...round, bonus: true });
  assert.equal(leaf[ATTR.nextTokenKind], "bonus");
  assert.equal(leaf[ATTR.firstRejection], undefined);
  const inner = roundAttributes({ ...round, bonus: false });
  assert.equal(inner[ATTR.nextTokenKind], "correction");
  assert.equal(inner[ATTR.firstRejection], 3);
});
