/**
 * The OpenAI-compatible HTTP API on a real stack: redis-server, the draft service and a target replica as child
 * processes, gateways in this process serving gRPC and HTTP on free 127.0.0.1 ports. Clients: the official `openai`
 * package (completions and chat, whole and streamed, aborted requests, every error class) and plain fetch for the
 * SSE framing. Greedy output through HTTP equals the gRPC output token for token; a `traceparent` header joins the
 * trace; a client that goes away cancels its request (CANCELLED, caches released); a deadline header ends it with 504;
 * a gateway with API keys and a per-tenant cap of one request answers 401, 403, 429 and, draining, 503; one with
 * TLS and a client CA serves HTTPS to clients with a certificate only.
 */
import assert from "node:assert/strict";
import { request as httpsRequest, type RequestOptions } from "node:https";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import OpenAI from "openai";
import { pino } from "pino";
import { gatewayTlsFiles, parseGatewayConfig } from "../../gateway/config.ts";
import { loadChatTemplate } from "../../gateway/http/chat-template.ts";
import type { OpenAiErrorBody } from "../../gateway/http/errors.ts";
import type { SpeculationSummary } from "../../gateway/http/responses.ts";
import { type RunningHttpApi, startHttpApi } from "../../gateway/http/server.ts";
import { loadServedModel, type ServedModel } from "../../gateway/served-model.ts";
import { type RunningGateway, startGateway } from "../../gateway/server.ts";
import type { DraftStats__Output } from "../../gen/specgate/v1/DraftStats.ts";
import type { TargetStats__Output } from "../../gen/specgate/v1/TargetStats.ts";
import { DraftClient, TargetClient } from "../../proto/load.ts";
import { apiKeyLine, newApiKey } from "../../sdk/api-key.ts";
import { SpecgateClient } from "../../sdk/index.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";
import { ATTR } from "../../services/telemetry/attributes.ts";
import { startTelemetry, type Telemetry } from "../../services/telemetry/start.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { makeTestCertificates } from "../support/tls.ts";
import { until } from "../support/until.ts";

const MODEL = "stories260k";
const DRAFTERS = "int4=stories260k-int4,ngram";
const PROMPT = "Once upon a time";
const MAX_TOKENS = 24;
/** Long enough that a stream is still running when the test acts on it. */
const LONG = 400;
const silent = pino({ level: "silent" });

/** What the HTTP API adds to OpenAI's bodies. */
type Extended<T> = T & { speculation: SpeculationSummary };
type WithIds = { token_ids: number[] };

/** A gateway and its HTTP listener. */
interface Listening {
  readonly gateway: RunningGateway;
  readonly http: RunningHttpApi;
}

/** GET over HTTPS with `options` (CA, client certificate); resolves with the status, rejects when TLS refuses. */
function httpsGet(url: string, options: RequestOptions): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, options, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}

function unary<T>(invoke: (callback: (error: grpc.ServiceError | null, value?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => invoke((error, value) => (error ? reject(error) : resolve(value as T))));
}

/** Asserts that `call` fails with an OpenAI API error of `status`, and returns it. */
async function refused(call: Promise<unknown>, status: number): Promise<InstanceType<typeof OpenAI.APIError>> {
  let caught: InstanceType<typeof OpenAI.APIError> | undefined;
  await assert.rejects(call, (error: unknown) => {
    assert.ok(error instanceof OpenAI.APIError, String(error));
    assert.equal(error.status, status, error.message);
    caught = error;
    return true;
  });
  return caught as InstanceType<typeof OpenAI.APIError>;
}

/** Checks a speculation summary against its own definitions. */
function checkSpeculation(summary: SpeculationSummary, drafter: string): void {
  assert.equal(summary.drafter, drafter);
  assert.ok(summary.rounds > 0);
  assert.ok(summary.accepted_tokens <= summary.draft_tokens);
  assert.equal(summary.accept_rate, summary.draft_tokens === 0 ? 0 : summary.accepted_tokens / summary.draft_tokens);
  assert.equal(summary.accept_length, 1 + summary.accepted_tokens / summary.rounds);
}

describe("OpenAI-compatible HTTP API on a real stack", { timeout: 120_000 }, () => {
  let redis: RedisServer;
  let draft: ServiceProcess;
  let target: ServiceProcess;
  let telemetry: Telemetry;
  const spans = new InMemorySpanExporter();
  let served: { model: ServedModel; tokenizer: Tokenizer };
  let draftAddress: string;
  let open: Listening;
  let openai: OpenAI;
  let grpcClient: SpecgateClient;
  const stopped: (() => Promise<void>)[] = [];

  async function serve(settings: Record<string, unknown>): Promise<Listening> {
    const config = parseGatewayConfig({ port: 0, redisUrl: redis.url, draftAddress, drafters: DRAFTERS, ...settings });
    const gateway = await startGateway({
      config,
      model: served.model,
      tokenizer: served.tokenizer,
      logger: silent,
      metrics: telemetry.metrics,
    });
    const http = await startHttpApi({
      gateway,
      model: served.model,
      chatTemplate: loadChatTemplate(MODEL),
      host: "127.0.0.1",
      port: 0,
      tls: gatewayTlsFiles(config),
    });
    stopped.push(async () => {
      await gateway.stop(1000);
      await http.close();
    });
    await until(() => gateway.router.replicas.size === 1, "the replica to be announced", 10_000);
    return { gateway, http };
  }

  /** The caches of the draft service and the replica hold nothing. */
  async function cachesIdle(): Promise<boolean> {
    const replica = open.gateway.router.replicas.get("r0");
    assert.ok(replica);
    const draftStub = new DraftClient(draftAddress, grpc.credentials.createInsecure());
    const targetStub = new TargetClient(replica.address, grpc.credentials.createInsecure());
    try {
      const [draftNow, targetNow] = await Promise.all([
        unary<DraftStats__Output>((cb) => draftStub.Stats({}, cb)),
        unary<TargetStats__Output>((cb) => targetStub.Stats({}, cb)),
      ]);
      return draftNow.sequences === 0 && draftNow.cache_bytes === 0 && targetNow.cache_bytes === 0;
    } finally {
      draftStub.close();
      targetStub.close();
    }
  }

  before(async () => {
    telemetry = await startTelemetry({
      serviceName: "specgate-gateway",
      metrics: { port: 0 },
      env: { OTEL_METRICS_EXPORTER: "none" },
      spanProcessors: [new SimpleSpanProcessor({ exporter: spans })],
    });
    redis = await startRedis();
    draft = spawnService("services/draft/main.ts", ["--port", "0", "--metrics-port", "0"], {
      SPECGATE_DRAFTERS: DRAFTERS,
    });
    target = spawnService("services/target/main.ts", ["--replica-id", "r0", "--model", MODEL], {
      REDIS_URL: redis.url,
    });
    const [line] = await Promise.all([
      draft.waitForLog((l) => l.msg === "draft service listening"),
      target.waitForLog((l) => l.msg === "target replica serving"),
    ]);
    draftAddress = String(line.address);
    served = await loadServedModel(MODEL);
    open = await serve({});
    openai = new OpenAI({ baseURL: open.http.url, apiKey: "unused", maxRetries: 0 });
    grpcClient = new SpecgateClient({ address: open.gateway.address });
  });

  after(async () => {
    grpcClient?.close();
    for (const stop of stopped) await stop();
    await Promise.all([draft?.stop(), target?.stop()]);
    await redis?.stop();
    await telemetry?.shutdown();
  });

  it("completions, whole and streamed, equal the gRPC output token for token (greedy)", async () => {
    const ids = served.tokenizer.encode(PROMPT, { bos: true });
    for (const prompt of [PROMPT, ids]) {
      const grpc = await grpcClient.generate({ prompt, max_tokens: MAX_TOKENS, drafter: "int4" });
      assert.equal(grpc.token_ids.length, MAX_TOKENS);
      const params = { model: MODEL, prompt, max_tokens: MAX_TOKENS, temperature: 0, return_token_ids: true };
      const whole = (await openai.completions.create(params)) as Extended<OpenAI.Completion>;
      const choice = whole.choices[0] as OpenAI.CompletionChoice & WithIds;
      assert.deepEqual(choice.token_ids, grpc.token_ids);
      assert.equal(choice.text, grpc.text);
      assert.equal(choice.finish_reason, "length");
      assert.deepEqual(whole.usage, {
        prompt_tokens: ids.length,
        completion_tokens: MAX_TOKENS,
        total_tokens: ids.length + MAX_TOKENS,
      });
      checkSpeculation(whole.speculation, "int4");

      const stream = await openai.completions.create({
        ...params,
        stream: true,
        stream_options: { include_usage: true },
      });
      const streamed: number[] = [];
      let text = "";
      let finish: Extended<OpenAI.Completion> | undefined;
      let usage: OpenAI.CompletionUsage | undefined;
      for await (const chunk of stream) {
        const part = chunk.choices[0] as (OpenAI.CompletionChoice & Partial<WithIds>) | undefined;
        if (part?.finish_reason) finish = chunk as Extended<OpenAI.Completion>;
        streamed.push(...(part?.token_ids ?? []));
        text += part?.text ?? "";
        if (chunk.usage) usage = chunk.usage;
      }
      assert.deepEqual(streamed, grpc.token_ids);
      assert.equal(text, grpc.text);
      assert.equal(finish?.choices[0].finish_reason, "length");
      checkSpeculation((finish as Extended<OpenAI.Completion>).speculation, "int4");
      assert.equal(usage?.completion_tokens, MAX_TOKENS);
    }
  });

  it("chat completions render the built-in stories260K template, whole and streamed, with the request's drafter", async () => {
    // The template writes the messages' contents one per line: one user message is the prompt itself.
    const grpc = await grpcClient.generate({ prompt: PROMPT, max_tokens: MAX_TOKENS, drafter: "none" });
    const params = {
      model: MODEL,
      messages: [{ role: "user" as const, content: PROMPT }],
      max_completion_tokens: MAX_TOKENS,
      speculation: { drafter: "ngram", k: 3 },
    };
    spans.reset();
    const whole = (await openai.chat.completions.create(params)) as Extended<OpenAI.ChatCompletion>;
    assert.equal(whole.object, "chat.completion");
    const span = spans.getFinishedSpans().find((s) => s.kind === SpanKind.SERVER);
    assert.equal(span?.name, "POST /v1/chat/completions", "the span is named by the route served");
    assert.equal(span?.attributes[ATTR.httpRoute], "/v1/chat/completions");
    assert.deepEqual(whole.choices[0].message.role, "assistant");
    assert.equal(whole.choices[0].message.content, grpc.text);
    checkSpeculation(whole.speculation, "ngram");

    const deltas: OpenAI.ChatCompletionChunk.Choice.Delta[] = [];
    for await (const chunk of await openai.chat.completions.create({ ...params, stream: true })) {
      assert.equal(chunk.object, "chat.completion.chunk");
      if (chunk.choices[0]) deltas.push(chunk.choices[0].delta);
    }
    assert.equal(deltas[0].role, "assistant");
    assert.equal(deltas.map((d) => d.content ?? "").join(""), grpc.text);
  });

  it("speculation.tree drafts token trees: greedy output equals target-only, whole and streamed", async () => {
    const prompts = [PROMPT, "The little dog", "Lily and Ben went to the park"];
    const tree = { width: 2, nodes: 8 };
    let branched = false;
    for (const prompt of prompts) {
      const only = await grpcClient.generate({ prompt, max_tokens: MAX_TOKENS, drafter: "none" });
      for (const adaptive of [false, true]) {
        const params = {
          model: MODEL,
          prompt,
          max_tokens: MAX_TOKENS,
          temperature: 0,
          return_token_ids: true,
          speculation: { drafter: "int4", k: 4, tree: { ...tree, adaptive } },
        };
        const whole = (await openai.completions.create(
          params as OpenAI.CompletionCreateParamsNonStreaming,
        )) as Extended<OpenAI.Completion>;
        assert.deepEqual((whole.choices[0] as OpenAI.CompletionChoice & WithIds).token_ids, only.token_ids, prompt);
        checkSpeculation(whole.speculation, "int4");
        // A chain of K = 4 proposes at most 4 tokens a round: more is a tree's branches.
        branched ||= whole.speculation.draft_tokens > 4 * whole.speculation.rounds;
        const streamed: number[] = [];
        for await (const chunk of await openai.completions.create({
          ...params,
          stream: true,
        } as OpenAI.CompletionCreateParamsStreaming)) {
          streamed.push(
            ...(((chunk as OpenAI.Completion).choices[0] as Partial<WithIds> | undefined)?.token_ids ?? []),
          );
        }
        assert.deepEqual(streamed, only.token_ids, `${prompt}, streamed`);
      }
    }
    assert.ok(branched, "rounds verified trees, not chains");
    // The gateway's own validation judges the shape, as over gRPC.
    const wide = await refused(
      openai.completions.create({
        model: MODEL,
        prompt: PROMPT,
        speculation: { tree: { width: 9, nodes: 6 } },
      } as never),
      400,
    );
    assert.match(wide.message, /speculation\.tree\.shape\.width/);
    const noNodes = await refused(
      openai.completions.create({ model: MODEL, prompt: PROMPT, speculation: { tree: { width: 2 } } } as never),
      400,
    );
    assert.match(noNodes.message, /speculation\.tree\.shape\.nodes must be at least 1/);
  });

  it("streams server-sent events exactly as OpenAI frames them", async () => {
    const response = await fetch(`${open.http.url}/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: PROMPT, max_tokens: 8, stream: true, stream_options: { include_usage: true } }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    const body = await response.text();
    assert.ok(body.endsWith("\n\n"), "every event ends with a blank line");
    const events = body.slice(0, -2).split("\n\n");
    for (const event of events) assert.match(event, /^data: [^\n]+$/, "one data line per event, nothing else");
    assert.equal(events.at(-1), "data: [DONE]");
    const chunks = events.slice(0, -1).map((event) => JSON.parse(event.slice("data: ".length)));
    const usage = chunks.at(-1);
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.completion_tokens, 8);
    const finishing = chunks.at(-2);
    assert.equal(finishing.choices[0].finish_reason, "length");
    assert.equal(finishing.speculation.drafter, "int4");
    for (const chunk of chunks.slice(0, -1)) {
      assert.equal(chunk.object, "text_completion");
      assert.equal(chunk.usage, null, "usage is null until the usage chunk");
      assert.equal(chunk.id, usage.id);
    }
  });

  it("a stream that fails after its first chunks ends with an error event, then [DONE]", async () => {
    spans.reset();
    // Plain decoding of many tokens outlasts the deadline by seconds; the first tokens come well before it.
    const response = await fetch(`${open.http.url}/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-timeout-ms": "800" },
      body: JSON.stringify({ prompt: PROMPT, max_tokens: LONG, stream: true, speculation: { drafter: "none" } }),
    });
    assert.equal(response.status, 200, "the status line went out before the failure");
    const body = await response.text();
    assert.ok(body.endsWith("\n\n"), "every event ends with a blank line");
    const events = body.slice(0, -2).split("\n\n");
    for (const event of events) assert.match(event, /^data: [^\n]+$/, "one data line per event, nothing else");
    assert.equal(events.at(-1), "data: [DONE]", "the stream still ends with [DONE]");
    const bodies = events.slice(0, -1).map((event) => JSON.parse(event.slice("data: ".length)));
    const error = bodies.at(-1) as OpenAiErrorBody;
    assert.deepEqual(Object.keys(error), ["error"], "the error event carries the error alone");
    assert.equal(error.error.type, "timeout_error");
    assert.equal(error.error.code, "deadline_exceeded");
    const chunks = bodies.slice(0, -1);
    assert.ok(chunks.length > 0, "text chunks came before the failure");
    for (const chunk of chunks) {
      assert.equal(chunk.object, "text_completion");
      assert.equal(chunk.choices[0].finish_reason, null, "no chunk claims the completion finished");
    }
    assert.ok(chunks.map((c) => c.choices[0].text).join("").length > 0);
    await until(() => open.gateway.admission.inFlight === 0, "the failed request to end", 10_000);
    // The span says what the client saw (200) and that the server failed the request all the same.
    const span = spans.getFinishedSpans().find((s) => s.name === "POST /v1/completions");
    assert.equal(span?.attributes[ATTR.httpStatus], 200);
    assert.equal(span?.attributes[ATTR.errorType], "DEADLINE_EXCEEDED");
    assert.equal(span?.status.code, SpanStatusCode.ERROR);
  });

  it("a traceparent header makes the request's span a child of the caller's", async () => {
    spans.reset();
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const parentId = "00f067aa0ba902b7";
    const response = await fetch(`${open.http.url}/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${traceId}-${parentId}-01` },
      body: JSON.stringify({ prompt: PROMPT, max_tokens: 4 }),
    });
    assert.equal(response.status, 200);
    const span = spans.getFinishedSpans().find((s) => s.name === "POST /v1/completions");
    assert.ok(span, "the request has a span");
    assert.equal(span.spanContext().traceId, traceId);
    assert.equal(span.parentSpanContext?.spanId, parentId);
    // HTTP's conventions, not gRPC's.
    assert.equal(span.attributes[ATTR.httpMethod], "POST");
    assert.equal(span.attributes[ATTR.httpRoute], "/v1/completions");
    assert.equal(span.attributes[ATTR.httpStatus], 200);
    assert.equal(span.attributes[ATTR.rpcSystem], undefined);
    assert.equal(span.attributes[ATTR.rpcMethod], undefined);
  });

  it("a client that aborts its stream cancels the request", async () => {
    spans.reset();
    const stream = await openai.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: LONG, stream: true });
    for await (const chunk of stream) {
      assert.ok(chunk.choices[0].text !== undefined);
      assert.equal(open.gateway.admission.inFlight, 1);
      stream.controller.abort();
    }
    await until(() => open.gateway.admission.inFlight === 0, "the aborted request to end", 10_000);
    const span = spans.getFinishedSpans().find((s) => s.name === "POST /v1/completions");
    assert.equal(span?.attributes[ATTR.requestStatus], "CANCELLED", "the request ended as cancelled, not finished");
    await until(cachesIdle, "the draft and target caches to be released", 10_000);
  });

  it("a client that gives up waiting for a whole completion cancels the request", async () => {
    spans.reset();
    const client = new AbortController();
    const whole = openai.completions.create(
      { model: MODEL, prompt: PROMPT, max_tokens: LONG },
      { signal: client.signal },
    );
    await until(() => open.gateway.admission.inFlight === 1, "the request to run", 10_000);
    client.abort();
    await assert.rejects(whole, OpenAI.APIUserAbortError);
    await until(() => open.gateway.admission.inFlight === 0, "the abandoned request to end", 10_000);
    const span = spans.getFinishedSpans().find((s) => s.name === "POST /v1/completions");
    assert.equal(span?.attributes[ATTR.requestStatus], "CANCELLED");
    assert.equal(span?.attributes[ATTR.httpStatus], 499, "the status a whole completion would have been answered with");
    await until(cachesIdle, "the draft and target caches to be released", 10_000);
  });

  it("refuses bad requests with OpenAI's error body: 400 bad fields, 404 unknown models and paths, 504 late", async () => {
    const badN = await refused(openai.completions.create({ model: MODEL, prompt: PROMPT, n: 2 }), 400);
    assert.equal(badN.param, "n");
    assert.equal(badN.type, "invalid_request_error");
    const logprobs = await refused(openai.completions.create({ model: MODEL, prompt: PROMPT, logprobs: 2 }), 400);
    assert.match(logprobs.message, /log-probabilities/);
    // The gRPC API's validation: every problem at once.
    const limits = await refused(
      openai.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 0, temperature: -1 }),
      400,
    );
    assert.match(limits.message, /max_tokens must be at least 1.*temperature must be a finite number >= 0/);
    const drafter = await refused(
      openai.completions.create({ model: MODEL, prompt: PROMPT, speculation: { drafter: "oracle" } } as never),
      400,
    );
    assert.match(drafter.message, /unknown drafter "oracle"/);
    const unknownField = await refused(
      openai.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }], tools: [] }),
      400,
    );
    assert.equal(unknownField.param, "tools");
    const model = await refused(openai.completions.create({ model: "gpt-x", prompt: PROMPT }), 404);
    assert.equal(model.code, "model_not_found");

    const notJson = await fetch(`${open.http.url}/completions`, { method: "POST", body: "{" });
    assert.equal(notJson.status, 400);
    assert.equal(((await notJson.json()) as OpenAiErrorBody).error.code, "invalid_json");
    const path = await fetch(`${open.http.url}/embeddings`, { method: "POST", body: "{}" });
    assert.equal(path.status, 404);
    assert.deepEqual(Object.keys(((await path.json()) as OpenAiErrorBody).error).sort(), [
      "code",
      "message",
      "param",
      "type",
    ]);

    // X-Request-Timeout-Ms is the request's deadline, as a gRPC deadline is.
    const late = (timeout: string) =>
      fetch(`${open.http.url}/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-timeout-ms": timeout },
        body: JSON.stringify({ prompt: PROMPT, max_tokens: LONG }),
      });
    const past = await late("1");
    assert.equal(past.status, 504);
    assert.equal(((await past.json()) as OpenAiErrorBody).error.code, "deadline_exceeded");
    const badTimeout = await late("soon");
    assert.equal(badTimeout.status, 400);
    assert.equal(((await badTimeout.json()) as OpenAiErrorBody).error.param, "x-request-timeout-ms");
    assert.equal(open.gateway.admission.inFlight, 0);
  });

  it("API keys, tenants, admission and drain: 401, 403, 429 with Retry-After, 503", async () => {
    const acmeKey = newApiKey();
    const betaKey = newApiKey();
    const guarded = await serve({
      apiKeys: `${apiKeyLine("acme", acmeKey)},${apiKeyLine("beta", betaKey)}`,
      maxInFlightPerTenant: 1,
    });
    const as = (apiKey: string, headers: Record<string, string> = {}) =>
      new OpenAI({ baseURL: guarded.http.url, apiKey, maxRetries: 0, defaultHeaders: headers });
    const story = { model: MODEL, prompt: PROMPT, max_tokens: 4 };

    const noKey = await fetch(`${guarded.http.url}/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(story),
    });
    assert.equal(noKey.status, 401);
    assert.match(((await noKey.json()) as OpenAiErrorBody).error.message, /requires an API key/);
    await refused(as(newApiKey()).completions.create(story), 401);
    await refused(as(newApiKey()).models.list(), 401);
    // Nothing is looked at before the key: no 404 for a model, no 400 for a field.
    await refused(as(newApiKey()).completions.create({ ...story, model: "gpt-x", n: 2 }), 401);
    const otherTenant = await refused(as(acmeKey, { "x-tenant-id": "beta" }).completions.create(story), 403);
    assert.match(otherTenant.message, /belongs to tenant "acme"/);
    assert.equal((await as(betaKey, { "x-tenant-id": "beta" }).completions.create(story)).choices.length, 1);
    assert.deepEqual(
      (await as(acmeKey).models.list()).data.map((m) => m.id),
      [MODEL],
    );

    const acme = as(acmeKey);
    const holding = await acme.completions.create({ ...story, max_tokens: LONG, stream: true });
    const chunks = holding[Symbol.asyncIterator]();
    await chunks.next();
    const full = await refused(acme.completions.create(story), 429);
    assert.equal(full.headers?.get("retry-after"), "1");
    assert.equal(full.code, "rate_limit_exceeded");

    const stopping = guarded.gateway.stop(10_000);
    const draining = await refused(as(betaKey).completions.create(story), 503);
    assert.equal(draining.headers?.get("retry-after"), "1");
    const health = await fetch(guarded.http.url.replace(/\/v1$/, "/health"));
    assert.equal(health.status, 503);
    holding.controller.abort();
    await stopping;
    assert.equal(guarded.gateway.admission.inFlight, 0);
  });

  it("serves HTTPS with the gateway's certificate, requiring client certificates when gRPC does", async (t) => {
    const certs = makeTestCertificates();
    if (!certs) return t.skip("no openssl");
    try {
      const tls = await serve({
        tlsCert: certs.serverCertFile,
        tlsKey: certs.serverKeyFile,
        tlsClientCa: certs.caFile,
      });
      assert.match(tls.http.url, /^https:/);
      const health = tls.http.url.replace(/\/v1$/, "/health");
      assert.equal(await httpsGet(health, { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }), 200);
      await assert.rejects(httpsGet(health, { ca: certs.ca }), "no client certificate, no connection");
      await assert.rejects(fetch(health.replace(/^https:/, "http:")), "no plaintext on the TLS port");
    } finally {
      certs.remove();
    }
  });
});
