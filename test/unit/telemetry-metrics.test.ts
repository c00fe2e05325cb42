import assert from "node:assert/strict";
import { test } from "node:test";
import { MeterProvider } from "@opentelemetry/sdk-metrics";
import { METRICS, prometheusName, prometheusSeriesNames, SpecgateMetrics } from "../../services/telemetry/metrics.ts";
import { type Scrape, sumSamples } from "../../services/telemetry/prometheus-text.ts";
import { ScrapeReader } from "../support/scrape-reader.ts";
import { LABELS, SCRIPT, scriptedRequest, scriptedRound } from "../support/telemetry-fixtures.ts";

async function recordEverything(): Promise<{ scrape: Scrape; provider: MeterProvider }> {
  const reader = new ScrapeReader();
  const provider = new MeterProvider({ readers: [reader] });
  const metrics = new SpecgateMetrics(provider.getMeter("specgate"));
  for (let i = 0; i < SCRIPT.length; i++) metrics.recordRound(LABELS, scriptedRound(i));
  metrics.recordRequest(LABELS, scriptedRequest());
  // Another tenant, same model pair: one round of two draft tokens, the first accepted.
  const globex = { ...LABELS, tenant: "globex" };
  metrics.recordRound(globex, { ...scriptedRound(0), proposed: 2, accepted: 1 });
  metrics.recordRequest(globex, {
    ...scriptedRequest(),
    stats: {
      rounds: 1,
      generated_tokens: 2,
      draft_tokens: 2,
      accepted_tokens: 1,
      proposed_per_position: [1, 1],
      accepted_per_position: [1, 0],
    },
  });
  // A request that failed: counted by status, its partial statistics counted under its own tenant.
  metrics.recordRequest(
    { ...LABELS, tenant: "initech" },
    { ...scriptedRequest("DEADLINE_EXCEEDED"), finishReason: "error" },
  );
  metrics.recordRpc("specgate.v1.Gateway/Generate", "OK", 40);
  const completions = { method: "POST", route: "/v1/completions" };
  metrics.recordHttpRequest(completions, 200, undefined, 30);
  metrics.recordHttpRequest(completions, 503, "503", 5);
  metrics.recordVerifyBatch("0", { queueWaitsMs: [1, 3, 5], durationMs: 12 });
  metrics.recordKvEvictions("draft", "0", 2);
  metrics.recordHistoryNeeded("0");
  let cacheBytes = 1024;
  const stopObserving = metrics.observeKvCache("target", "0", () => cacheBytes);
  metrics.observeQueueDepth("0", () => 3);
  cacheBytes = 4096;
  const scrape = await reader.scrape();
  stopObserving();
  return { scrape, provider };
}

test("every defined metric is exported under its Prometheus name, and only those", async () => {
  const { scrape, provider } = await recordEverything();
  const defined = prometheusSeriesNames();
  const exported = new Set(scrape.samples.map((sample) => sample.name));
  for (const name of exported) assert.ok(defined.has(name), `exported but not defined: ${name}`);
  for (const definition of Object.values(METRICS)) {
    const name = prometheusName(definition);
    assert.ok(
      exported.has(name) || exported.has(`${name}_count`),
      `defined but not exported: ${definition.name} (${name})`,
    );
    const type = definition.kind === "gauge" ? "gauge" : definition.kind;
    assert.equal(scrape.types.get(name), type, `TYPE of ${name}`);
  }
  await provider.shutdown();
});

test("acceptance by tenant and model pair equals accepted / proposed of the requests recorded", async () => {
  const { scrape, provider } = await recordEverything();
  const pair = { specgate_tenant: "acme", gen_ai_request_model: "stories260k", specgate_drafter: "int4" };
  const proposed = sumSamples(scrape, "specgate_spec_decode_num_draft_tokens_total", pair);
  const accepted = sumSamples(scrape, "specgate_spec_decode_num_accepted_tokens_total", pair);
  assert.equal(proposed, 14);
  assert.equal(accepted, 7);
  // vLLM's mean acceptance length, 1 + accepted / drafts, from a scrape: 4 rounds, each with a draft.
  assert.equal(sumSamples(scrape, "specgate_spec_decode_num_drafts_total", pair), 4);
  assert.equal(sumSamples(scrape, "specgate_spec_decode_num_accepted_tokens_total", { specgate_tenant: "globex" }), 1);
  // Per position (1-based), by model pair across tenants: acme [4,4,4,2]/[3,2,1,1] twice (initech's failed request has
  // the same statistics) plus globex [1,1]/[1,0].
  const perPosition = (name: string, position: number) =>
    sumSamples(scrape, name, { specgate_drafter: "int4", specgate_draft_position: String(position) });
  assert.deepEqual(
    [1, 2, 3, 4].map((p) => perPosition("specgate_spec_decode_num_draft_tokens_per_pos_total", p)),
    [9, 9, 8, 4],
  );
  assert.deepEqual(
    [1, 2, 3, 4].map((p) => perPosition("specgate_spec_decode_num_accepted_tokens_per_pos_total", p)),
    [7, 4, 2, 2],
  );
  // Acceptance length and K per round.
  assert.equal(sumSamples(scrape, "specgate_round_accepted_count", { specgate_tenant: "acme" }), 4);
  assert.equal(sumSamples(scrape, "specgate_round_accepted_sum", { specgate_tenant: "acme" }), 7);
  assert.equal(sumSamples(scrape, "specgate_round_k_sum", { specgate_tenant: "acme" }), 16);
  assert.equal(sumSamples(scrape, "specgate_round_k_bucket", { specgate_tenant: "acme", le: "3" }), 1);
  await provider.shutdown();
});

test("round time split, latencies, requests by status, batches, caches", async () => {
  const { scrape, provider } = await recordEverything();
  const close = (actual: number, expected: number) => assert.ok(Math.abs(actual - expected) < 1e-9, `${actual}`);
  // Phase time from the requests' statistics (acme's and initech's: 6, 2.5 and 12 ms each).
  close(sumSamples(scrape, "specgate_round_phase_time_total", { specgate_round_phase: "draft" }), 0.012);
  close(sumSamples(scrape, "specgate_round_phase_time_total", { specgate_round_phase: "queue" }), 0.005);
  close(sumSamples(scrape, "specgate_round_phase_time_total", { specgate_round_phase: "verify" }), 0.024);
  assert.equal(sumSamples(scrape, "specgate_round_duration_count"), 5);
  close(sumSamples(scrape, "specgate_round_duration_sum"), 5 * 0.005);
  // TTFT and TPOT only from successful requests: (40 ms - 7 ms) / (11 tokens - 1).
  assert.equal(sumSamples(scrape, "gen_ai_server_time_to_first_token_count", { specgate_tenant: "acme" }), 1);
  close(sumSamples(scrape, "gen_ai_server_time_to_first_token_sum", { specgate_tenant: "acme" }), 0.007);
  close(sumSamples(scrape, "gen_ai_server_time_per_output_token_sum", { specgate_tenant: "acme" }), 0.0033);
  assert.equal(sumSamples(scrape, "gen_ai_server_time_to_first_token_count", { specgate_tenant: "initech" }), 0);
  assert.equal(sumSamples(scrape, "gen_ai_client_token_usage_sum", { gen_ai_token_type: "output" }), 11 + 2 + 11);
  assert.equal(sumSamples(scrape, "gen_ai_client_token_usage_sum", { gen_ai_token_type: "input" }), 27);
  assert.equal(sumSamples(scrape, "specgate_requests_total", { specgate_request_status: "OK" }), 2);
  assert.equal(
    sumSamples(scrape, "specgate_requests_total", {
      specgate_request_status: "DEADLINE_EXCEEDED",
      specgate_finish_reason: "error",
    }),
    1,
  );
  assert.equal(
    sumSamples(scrape, "rpc_server_call_duration_count", {
      rpc_system_name: "grpc",
      rpc_method: "specgate.v1.Gateway/Generate",
      rpc_status_code: "OK",
    }),
    1,
  );
  const route = { http_request_method: "POST", http_route: "/v1/completions" };
  assert.equal(sumSamples(scrape, "http_server_request_duration_count", route), 2);
  close(sumSamples(scrape, "http_server_request_duration_sum", { ...route, http_response_status_code: "200" }), 0.03);
  assert.equal(
    sumSamples(scrape, "http_server_request_duration_count", { http_response_status_code: "503", error_type: "503" }),
    1,
  );
  assert.equal(
    scrape.samples.some((sample) => sample.name.startsWith("rpc_") && sample.labels.http_route !== undefined),
    false,
    "HTTP requests are not counted as gRPC calls",
  );
  assert.equal(sumSamples(scrape, "specgate_verify_batch_size_sum", { specgate_replica: "0" }), 3);
  assert.equal(sumSamples(scrape, "specgate_verify_queue_wait_count", { specgate_replica: "0" }), 3);
  close(sumSamples(scrape, "specgate_verify_queue_wait_sum"), 0.009);
  assert.equal(sumSamples(scrape, "specgate_kv_cache_usage", { specgate_cache_role: "target" }), 4096);
  assert.equal(sumSamples(scrape, "specgate_kv_cache_evictions_total", { specgate_cache_role: "draft" }), 2);
  const targetEvictions = scrape.samples.filter(
    (sample) => sample.name === "specgate_kv_cache_evictions_total" && sample.labels.specgate_cache_role === "target",
  );
  assert.deepEqual(
    targetEvictions.map((sample) => sample.value),
    [0],
    "an observed cache's eviction counter exists from the start",
  );
  assert.equal(sumSamples(scrape, "specgate_verify_queue_depth", { specgate_replica: "0" }), 3);
  await provider.shutdown();
});
