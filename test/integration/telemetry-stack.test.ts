/**
 * Telemetry of the real stack (redis-server, draft service, two target replicas, gateway as processes, exporting
 * OTLP/HTTP JSON to a receiver on loopback): each request is one connected trace whose attributes equal the statistics
 * the client received; a request over the HTTP API has a span by HTTP's conventions (and a duration in
 * http.server.request.duration, not in the gRPC calls'); per-tenant acceptance scraped from the gateway equals the
 * figure computed from the responses; and every metric and label the Grafana dashboards query is really exported by
 * the running services.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { type LocalStack, startLocalStack } from "../../deploy/local-stack.ts";
import type { SpeculationSummary } from "../../gateway/http/responses.ts";
import type { SpeculationStats__Output } from "../../gen/specgate/v1/SpeculationStats.ts";
import type { Usage__Output } from "../../gen/specgate/v1/Usage.ts";
import { SpecgateClient } from "../../sdk/index.ts";
import { ATTR, statAttribute } from "../../services/telemetry/attributes.ts";
import { parsePrometheusText, type Scrape, sumSamples } from "../../services/telemetry/prometheus-text.ts";
import { ROUND_SPAN_NAME } from "../../services/telemetry/request-trace.ts";
import { VERIFY_BATCH_SPAN_NAME, VERIFY_JOB_SPAN_NAME } from "../../services/telemetry/verify-trace.ts";
import { legendLabels, loadDashboards, panelQueries, promqlNames, variableQueries } from "../support/dashboards.ts";
import { OtlpReceiver, type ReceivedSpan } from "../support/otlp-receiver.ts";
import { expectedStatAttributes } from "../support/telemetry-fixtures.ts";

const DRAFT_SPAN_NAME = "specgate.draft";

interface Sent {
  tenant: string;
  drafter: string;
  method: string;
  traceId: string;
  clientSpanId: string;
  stats: SpeculationStats__Output;
  usage: Usage__Output;
}

const REQUESTS = [
  { tenant: "acme", drafter: "int4", prompt: "Once upon a time", stream: false },
  { tenant: "acme", drafter: "int4", prompt: "The little dog", stream: true },
  { tenant: "globex", drafter: "ngram", prompt: "Tom and Lily went to the park. Tom and Lily", stream: false },
  { tenant: "globex", drafter: "early-exit", prompt: "One day, a bird", stream: false },
];

function withoutOtel(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([key]) => !key.startsWith("OTEL_")));
}

async function scrape(url: string): Promise<Scrape> {
  const response = await fetch(url);
  assert.equal(response.status, 200, url);
  return parsePrometheusText(await response.text());
}

/** The request sent to the OpenAI-compatible HTTP API, and what its response said. */
interface SentOverHttp {
  traceId: string;
  clientSpanId: string;
  speculation: SpeculationSummary;
  usage: { prompt_tokens: number; completion_tokens: number };
}

describe("telemetry of the real stack", { timeout: 300_000 }, () => {
  let receiver: OtlpReceiver;
  let stack: LocalStack;
  const sent: Sent[] = [];
  let overHttp: SentOverHttp;

  before(async () => {
    receiver = await OtlpReceiver.start();
    stack = await startLocalStack({
      gatewayPort: 0,
      metricsPorts: "free",
      replicas: 2,
      // Drafts on verdicts hang off the round they settled: the traces must still hold together.
      draftOnVerdict: true,
      log: () => {},
      env: {
        ...withoutOtel(process.env),
        REDIS_URL: undefined,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.httpUrl,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_METRICS_EXPORTER: "prometheus",
        OTEL_BSP_SCHEDULE_DELAY: "100",
      },
    });
    const client = new SpecgateClient({ address: stack.gatewayAddress, timeoutMs: 120_000 });
    try {
      for (const request of REQUESTS) {
        const traceId = randomBytes(16).toString("hex");
        const clientSpanId = randomBytes(8).toString("hex");
        const input = {
          prompt: request.prompt,
          max_tokens: 24,
          temperature: 0,
          drafter: request.drafter,
          tenant_id: request.tenant,
        };
        const options = { metadata: { traceparent: `00-${traceId}-${clientSpanId}-01` } };
        let stats: SpeculationStats__Output | null = null;
        let usage: Usage__Output | null = null;
        if (request.stream) {
          for await (const event of client.stream(input, options)) {
            if (event.type === "end") ({ stats, usage } = event);
          }
        } else {
          ({ stats, usage } = await client.generate(input, options));
        }
        assert.ok(stats && usage);
        const method = `specgate.v1.Gateway/${request.stream ? "GenerateStream" : "Generate"}`;
        sent.push({ tenant: request.tenant, drafter: request.drafter, method, traceId, clientSpanId, stats, usage });
      }
    } finally {
      client.close();
    }
    const traceId = randomBytes(16).toString("hex");
    const clientSpanId = randomBytes(8).toString("hex");
    const response = await fetch(`${stack.httpUrl}/completions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        traceparent: `00-${traceId}-${clientSpanId}-01`,
        "x-tenant-id": "initech",
      },
      body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 24, speculation: { drafter: "int4" } }),
    });
    assert.equal(response.status, 200);
    overHttp = {
      traceId,
      clientSpanId,
      ...((await response.json()) as Omit<SentOverHttp, "traceId" | "clientSpanId">),
    };
  });

  after(async () => {
    await stack?.stop();
    await receiver?.close();
  });

  function traceOf(request: Sent): ReceivedSpan[] {
    return receiver.spans().filter((span) => span.traceId === request.traceId);
  }

  function complete(request: Sent): boolean {
    const spans = traceOf(request);
    const count = (name: string) => spans.filter((span) => span.name === name).length;
    const drafted = request.stats.k_per_round.filter((k) => k > 0).length - request.stats.fallback_rounds;
    // Rounds the request drafted for, each with its draft span (a draft on the last verdict may also have drafted a
    // round the request then did not run, or ran at K = 0).
    const draftedRounds = new Set(
      spans
        .filter((span) => span.name === DRAFT_SPAN_NAME)
        .map((span) => span.attributes[ATTR.round] as number)
        .filter((round) => (request.stats.k_per_round[round - 1] ?? 0) > 0),
    );
    return (
      count(request.method) === 1 &&
      count(ROUND_SPAN_NAME) === request.stats.rounds &&
      count(VERIFY_JOB_SPAN_NAME) === request.stats.rounds &&
      draftedRounds.size === drafted
    );
  }

  test("each request is one connected trace across gateway, draft service and target replicas", async () => {
    await receiver.waitFor(() => sent.every(complete), 60_000);
    for (const request of sent) {
      const spans = traceOf(request);
      const ids = new Set([request.clientSpanId, ...spans.map((span) => span.spanId)]);
      for (const span of spans) {
        assert.ok(ids.has(span.parentSpanId), `${span.service} ${span.name} hangs off a span of the same trace`);
      }
      const [requestSpan] = spans.filter((span) => span.name === request.method);
      assert.equal(requestSpan.service, "specgate-gateway");
      assert.equal(requestSpan.parentSpanId, request.clientSpanId, "the client's traceparent is honoured");

      const rounds = spans
        .filter((span) => span.name === ROUND_SPAN_NAME)
        .sort((a, b) => (a.attributes[ATTR.round] as number) - (b.attributes[ATTR.round] as number));
      for (const round of rounds) assert.equal(round.parentSpanId, requestSpan.spanId);
      const roundIds = new Set(rounds.map((round) => round.spanId));
      for (const span of spans.filter((s) => s.name === DRAFT_SPAN_NAME)) {
        assert.equal(span.service, "specgate-draft");
        assert.ok(roundIds.has(span.parentSpanId), "a draft span belongs to a round");
        const round = span.attributes[ATTR.round] as number;
        if ((request.stats.k_per_round[round - 1] ?? 0) === 0) {
          assert.equal(span.attributes[ATTR.draftOnVerdict], true, "only a draft on a verdict drafts an unused round");
        }
      }
      const jobs = spans.filter((span) => span.name === VERIFY_JOB_SPAN_NAME);
      for (const job of jobs) {
        assert.equal(job.service, "specgate-target");
        assert.ok(roundIds.has(job.parentSpanId), "a verify job span belongs to a round");
        const round = rounds.find((r) => r.spanId === job.parentSpanId) as ReceivedSpan;
        assert.equal(job.attributes[ATTR.accepted], round.attributes[ATTR.accepted]);
        assert.equal(job.attributes[ATTR.replica], round.attributes[ATTR.replica]);
        // The batch span that served the job links back to the job's round.
        const batch = receiver.spans().find((s) => s.spanId === job.links[0]?.spanId) as ReceivedSpan;
        assert.equal(batch.name, VERIFY_BATCH_SPAN_NAME);
        assert.ok(batch.links.some((link) => link.spanId === round.spanId && link.traceId === request.traceId));
      }
    }
    assert.ok(
      receiver.spans().some((s) => s.name === DRAFT_SPAN_NAME && s.attributes[ATTR.draftOnVerdict] === true),
      "the stack's draft service drafts on the replicas' verdicts",
    );
  });

  test("the request span carries exactly the statistics the client received", () => {
    for (const request of sent) {
      const [requestSpan] = traceOf(request).filter((span) => span.name === request.method);
      const attributes = requestSpan.attributes;
      for (const [name, value] of expectedStatAttributes(request.stats)) {
        assert.deepEqual(attributes[name], value, `${request.method} ${request.tenant}: ${name}`);
      }
      assert.equal(attributes[ATTR.tenant], request.tenant);
      assert.equal(attributes[ATTR.drafter], request.drafter);
      assert.equal(attributes[ATTR.inputTokens], request.usage.prompt_tokens);
      assert.equal(attributes[ATTR.outputTokens], request.usage.completion_tokens);
      assert.equal(attributes[ATTR.rpcStatus], "OK");

      // The rounds add up to the totals.
      const rounds = traceOf(request)
        .filter((span) => span.name === ROUND_SPAN_NAME)
        .sort((a, b) => (a.attributes[ATTR.round] as number) - (b.attributes[ATTR.round] as number));
      const sum = (key: string) => rounds.reduce((total, round) => total + (round.attributes[key] as number), 0);
      assert.deepEqual(
        rounds.map((round) => round.attributes[ATTR.k]),
        request.stats.k_per_round,
      );
      assert.equal(sum(ATTR.proposed), request.stats.draft_tokens);
      assert.equal(sum(ATTR.accepted), request.stats.accepted_tokens);
      for (const round of rounds) assert.ok(request.stats.replicas.includes(round.attributes[ATTR.replica] as string));
      // Each round span carries the timings the client received for that round.
      rounds.forEach((round, i) => {
        const timing = request.stats.round_timings[i];
        assert.deepEqual(
          [ATTR.roundMs, ATTR.draftMs, ATTR.queueWaitMs, ATTR.verifyMs, ATTR.batchSize].map((k) => round.attributes[k]),
          [timing.round_ms, timing.draft_wait_ms, timing.queue_wait_ms, timing.verify_compute_ms, timing.batch_size],
          `round ${i + 1}`,
        );
      });
    }
  });

  test("an HTTP request's trace follows HTTP's conventions, its rounds nested as a gRPC request's", async () => {
    const spansOf = () => receiver.spans().filter((span) => span.traceId === overHttp.traceId);
    const rounds = () => spansOf().filter((span) => span.name === ROUND_SPAN_NAME);
    await receiver.waitFor(
      () =>
        spansOf().some((span) => span.name === "POST /v1/completions") &&
        rounds().length === overHttp.speculation.rounds,
      60_000,
    );
    const [requestSpan] = spansOf().filter((span) => span.name === "POST /v1/completions");
    assert.equal(requestSpan.service, "specgate-gateway");
    assert.equal(requestSpan.parentSpanId, overHttp.clientSpanId, "the client's traceparent is honoured");
    const attributes = requestSpan.attributes;
    assert.equal(attributes[ATTR.httpMethod], "POST");
    assert.equal(attributes[ATTR.httpRoute], "/v1/completions");
    assert.equal(attributes[ATTR.httpStatus], 200);
    assert.equal(attributes[ATTR.requestStatus], "OK");
    for (const grpcOnly of [ATTR.rpcSystem, ATTR.rpcMethod, ATTR.rpcStatus]) {
      assert.equal(attributes[grpcOnly], undefined, `no ${grpcOnly} on an HTTP request's span`);
    }
    assert.equal(attributes[ATTR.tenant], "initech");
    assert.equal(attributes[statAttribute("rounds")], overHttp.speculation.rounds);
    assert.equal(attributes[statAttribute("draft_tokens")], overHttp.speculation.draft_tokens);
    assert.equal(attributes[statAttribute("accepted_tokens")], overHttp.speculation.accepted_tokens);
    assert.equal(attributes[ATTR.inputTokens], overHttp.usage.prompt_tokens);
    assert.equal(attributes[ATTR.outputTokens], overHttp.usage.completion_tokens);
    for (const round of rounds()) assert.equal(round.parentSpanId, requestSpan.spanId);

    const gateway = stack.services.find((service) => service.name === "gateway");
    const scraped = await scrape(gateway?.metricsUrl as string);
    const route = { http_request_method: "POST", http_route: "/v1/completions", http_response_status_code: "200" };
    assert.equal(sumSamples(scraped, "http_server_request_duration_count", route), 1);
    assert.equal(
      sumSamples(scraped, "rpc_server_call_duration_count", { rpc_method: "POST /v1/completions" }),
      0,
      "an HTTP request is not a gRPC call",
    );
  });

  test("per-tenant acceptance from the gateway's Prometheus endpoint equals the figure from the responses", async () => {
    const gateway = stack.services.find((service) => service.name === "gateway");
    const scraped = await scrape(gateway?.metricsUrl as string);
    for (const tenant of new Set(sent.map((request) => request.tenant))) {
      const mine = sent.filter((request) => request.tenant === tenant);
      const proposed = mine.reduce((total, request) => total + request.stats.draft_tokens, 0);
      const accepted = mine.reduce((total, request) => total + request.stats.accepted_tokens, 0);
      const labels = { specgate_tenant: tenant };
      const scrapedProposed = sumSamples(scraped, "specgate_spec_decode_num_draft_tokens_total", labels);
      const scrapedAccepted = sumSamples(scraped, "specgate_spec_decode_num_accepted_tokens_total", labels);
      assert.equal(scrapedProposed, proposed, `${tenant}: proposed`);
      assert.equal(scrapedAccepted, accepted, `${tenant}: accepted`);
      assert.ok(proposed > 0);
      assert.equal(scrapedAccepted / scrapedProposed, accepted / proposed, `${tenant}: alpha`);
      assert.equal(sumSamples(scraped, "specgate_requests_total", { ...labels, specgate_request_status: "OK" }), 2);
    }
  });

  test("every metric and label the dashboards query is exported by the running services", async () => {
    const scrapes = await Promise.all(stack.services.map((service) => scrape(service.metricsUrl as string)));
    const labelsOf = new Map<string, Set<string>>();
    for (const sample of scrapes.flatMap((s) => s.samples)) {
      const labels = labelsOf.get(sample.name) ?? new Set<string>();
      for (const label of Object.keys(sample.labels)) labels.add(label);
      labelsOf.set(sample.name, labels);
    }
    for (const dashboard of loadDashboards()) {
      for (const query of [...panelQueries(dashboard), ...variableQueries(dashboard)]) {
        if (query.datasource?.type !== "prometheus") continue;
        const { metrics, labels } = promqlNames(query.text);
        const available = new Set<string>();
        for (const metric of metrics) {
          assert.ok(labelsOf.has(metric), `${query.where}: ${metric} is not exported by the running stack`);
          for (const label of labelsOf.get(metric) ?? []) available.add(label);
        }
        for (const label of [...labels, ...legendLabels(query.legendFormat)]) {
          assert.ok(available.has(label), `${query.where}: no series of ${[...metrics]} has label ${label}`);
        }
      }
    }
  });
});
