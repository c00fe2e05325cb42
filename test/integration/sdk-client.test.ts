/**
 * The SDK client against a real gRPC server on 127.0.0.1 implementing the Gateway service from the generated types
 * (a scripted fixture: the behaviour under test is the client's retries, deadlines, cancellation and error mapping).
 */
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import type { GatewayHandlers } from "../../gen/specgate/v1/Gateway.ts";
import type { GenerateRequest__Output } from "../../gen/specgate/v1/GenerateRequest.ts";
import { gatewayService } from "../../proto/load.ts";
import { SpecgateClient, SpecgateError } from "../../sdk/index.ts";
import { bindServer } from "../../services/grpc/server.ts";
import { serverTlsCredentials } from "../../services/grpc/tls.ts";
import { makeTestCertificates } from "../support/tls.ts";

type Behaviour = (
  attempt: number,
  call:
    | grpc.ServerUnaryCall<GenerateRequest__Output, unknown>
    | grpc.ServerWritableStream<GenerateRequest__Output, unknown>,
) => "hang" | grpc.ServiceError | null;

const END = {
  finish_reason: "FINISH_REASON_LENGTH" as const,
  stats: { rounds: 2, draft_tokens: 4, accepted_tokens: 3, alpha: 0.75 },
  usage: { prompt_tokens: 3, completion_tokens: 5 },
  request_id: "r1",
  seed: 7,
  model: "fixture",
};

function failure(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

describe("SpecgateClient against a real gRPC server", { timeout: 20_000 }, () => {
  const server = new grpc.Server();
  let port = 0;
  let behaviour: Behaviour = () => null;
  let attempts = 0;
  let lastRequest: GenerateRequest__Output | undefined;
  const cancelledOnServer: string[] = [];

  const handlers: Pick<GatewayHandlers, "Generate" | "GenerateStream" | "ListModels"> = {
    Generate(call, callback) {
      attempts++;
      lastRequest = call.request;
      call.on("cancelled", () => cancelledOnServer.push("Generate"));
      const outcome = behaviour(attempts, call);
      if (outcome === "hang") return;
      if (outcome) callback(outcome);
      else callback(null, { token_ids: [5, 6, 7, 8, 9], text: " a story", ...END });
    },
    GenerateStream(call) {
      attempts++;
      lastRequest = call.request;
      call.on("cancelled", () => cancelledOnServer.push("GenerateStream"));
      call.write({ delta: { token_ids: [5, 6], text: " a", round: 1 } });
      const outcome = behaviour(attempts, call);
      if (outcome === "hang") return;
      if (outcome) {
        call.emit("error", outcome);
        return;
      }
      call.write({ delta: { token_ids: [7, 8, 9], text: " story", round: 2 } });
      call.write({ end: END });
      call.end();
    },
    ListModels(_call, callback) {
      callback(null, { models: [{ name: "fixture", vocab_size: 512 }], drafters: [], default_drafter: "none" });
    },
  };

  let client: SpecgateClient;
  before(async () => {
    server.addService(gatewayService, handlers);
    port = await bindServer(server, "127.0.0.1", 0);
    client = new SpecgateClient({
      address: `127.0.0.1:${port}`,
      retry: { maxAttempts: 3, initialBackoffMs: 5, maxBackoffMs: 20 },
    });
  });
  after(() => {
    client.close();
    server.forceShutdown();
  });
  beforeEach(() => {
    attempts = 0;
    behaviour = () => null;
    cancelledOnServer.length = 0;
  });

  it("generate() sends the request as the contract says and returns the full result", async () => {
    const result = await client.generate({
      prompt: "Once upon a time",
      max_tokens: 5,
      temperature: 0.7,
      top_p: 0.9,
      seed: 42,
      drafter: "int4",
      k: 4,
      acceptance: "lossy-top-k",
      relaxed_top_k: 3,
      tenant_id: "acme",
    });
    assert.deepEqual(result.token_ids, [5, 6, 7, 8, 9]);
    assert.equal(result.finish_reason, "FINISH_REASON_LENGTH");
    assert.equal(result.stats?.alpha, 0.75);
    assert.equal(lastRequest?.prompt, "text");
    assert.equal(lastRequest?.text, "Once upon a time");
    assert.equal(lastRequest?.max_tokens, 5);
    assert.deepEqual(
      { ...lastRequest?.sampling },
      { temperature: 0.7, top_k: 0, top_p: 0.9, seed: 42, _top_p: "top_p", _seed: "seed" },
    );
    assert.equal(lastRequest?.speculation?.length, "fixed_k");
    assert.equal(lastRequest?.speculation?.fixed_k, 4);
    assert.equal(lastRequest?.speculation?.acceptance, "ACCEPTANCE_MODE_LOSSY_TOP_K");
    assert.equal(lastRequest?.speculation?.relaxed?.top_k, 3);
    assert.equal(lastRequest?.tenant_id, "acme");
  });

  it("sends token-id prompts and adaptive K, and leaves unset options unset", async () => {
    await client.generate({ prompt: [1, 2, 3], k: "adaptive", k_max: 6 });
    assert.equal(lastRequest?.prompt, "token_ids");
    assert.deepEqual(lastRequest?.token_ids?.ids, [1, 2, 3]);
    assert.equal(lastRequest?.max_tokens, undefined);
    assert.equal(lastRequest?.sampling?.seed, undefined);
    assert.equal(lastRequest?.speculation?.length, "adaptive");
    assert.deepEqual({ ...lastRequest?.speculation?.adaptive }, { min_k: 0, max_k: 6 });
  });

  it("stream() yields the deltas then the end message", async () => {
    const events = [];
    for await (const event of client.stream({ prompt: "hi" })) events.push(event);
    assert.deepEqual(
      events.map((e) => e.type),
      ["delta", "delta", "end"],
    );
    const text = events.map((e) => (e.type === "delta" ? e.text : "")).join("");
    assert.equal(text, " a story");
    const end = events[2];
    assert.equal(end.type === "end" && end.finish_reason, "FINISH_REASON_LENGTH");
  });

  it("retries UNAVAILABLE with backoff and succeeds", async () => {
    behaviour = (attempt) => (attempt < 3 ? failure(grpc.status.UNAVAILABLE, "replica gone") : null);
    const result = await client.generate({ prompt: "hi" });
    assert.equal(result.text, " a story");
    assert.equal(attempts, 3);
  });

  it("gives up after maxAttempts and surfaces the last UNAVAILABLE", async () => {
    behaviour = () => failure(grpc.status.UNAVAILABLE, "replica gone");
    await assert.rejects(client.generate({ prompt: "hi" }), (error: unknown) => {
      assert.ok(error instanceof SpecgateError);
      assert.equal(error.code, grpc.status.UNAVAILABLE);
      assert.equal(error.details, "replica gone");
      return true;
    });
    assert.equal(attempts, 3);
  });

  it("does not retry other codes, and carries code and message", async () => {
    behaviour = () => failure(grpc.status.INVALID_ARGUMENT, "prompt is empty");
    await assert.rejects(client.generate({ prompt: "" }), (error: unknown) => {
      assert.ok(error instanceof SpecgateError);
      assert.equal(error.codeName, "INVALID_ARGUMENT");
      assert.match(error.message, /INVALID_ARGUMENT: prompt is empty/);
      return true;
    });
    assert.equal(attempts, 1);
  });

  it("retries a stream that failed before yielding, never one that has yielded", async () => {
    behaviour = () => failure(grpc.status.UNAVAILABLE, "draft lost");
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const event of client.stream({ prompt: "hi" })) seen.push(event.type);
      })(),
      (error: unknown) => error instanceof SpecgateError && error.code === grpc.status.UNAVAILABLE,
    );
    assert.deepEqual(seen, ["delta"]);
    assert.equal(attempts, 1);
  });

  it("enforces the deadline: DEADLINE_EXCEEDED", async () => {
    behaviour = () => "hang";
    await assert.rejects(
      client.generate({ prompt: "hi" }, { timeoutMs: 150 }),
      (error: unknown) => error instanceof SpecgateError && error.code === grpc.status.DEADLINE_EXCEEDED,
    );
  });

  it("cancels a unary call on abort and the server sees the cancellation", async () => {
    behaviour = () => "hang";
    const controller = new AbortController();
    const pending = client.generate({ prompt: "hi" }, { signal: controller.signal });
    while (attempts === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    controller.abort();
    await assert.rejects(
      pending,
      (error: unknown) => error instanceof SpecgateError && error.code === grpc.status.CANCELLED,
    );
    // Resolves only once the server has seen the cancellation (the test's timeout fails it otherwise).
    while (!cancelledOnServer.includes("Generate")) await new Promise((resolve) => setTimeout(resolve, 5));
  });

  it("cancels a stream mid-way on abort", async () => {
    behaviour = () => "hang";
    const controller = new AbortController();
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const event of client.stream({ prompt: "hi" }, { signal: controller.signal })) {
          seen.push(event.type);
          controller.abort();
        }
      })(),
      (error: unknown) => error instanceof SpecgateError && error.code === grpc.status.CANCELLED,
    );
    assert.deepEqual(seen, ["delta"]);
    while (!cancelledOnServer.includes("GenerateStream")) await new Promise((resolve) => setTimeout(resolve, 5));
  });

  it("rejects at once when the signal is already aborted", async () => {
    await assert.rejects(
      client.generate({ prompt: "hi" }, { signal: AbortSignal.abort() }),
      (error: unknown) => error instanceof SpecgateError && error.code === grpc.status.CANCELLED,
    );
    assert.equal(attempts, 0);
  });

  it("lists models", async () => {
    const models = await client.listModels();
    assert.equal(models.models[0].name, "fixture");
  });
});

describe("SpecgateClient without a server", () => {
  it("retries then fails UNAVAILABLE", async () => {
    const server = new grpc.Server();
    server.addService(gatewayService, {});
    const port = await bindServer(server, "127.0.0.1", 0);
    server.forceShutdown();
    const client = new SpecgateClient({
      address: `127.0.0.1:${port}`,
      retry: { maxAttempts: 2, initialBackoffMs: 5, maxBackoffMs: 10 },
    });
    await assert.rejects(
      client.generate({ prompt: "hi" }, { timeoutMs: 5000 }),
      (error: unknown) => error instanceof SpecgateError && error.code === grpc.status.UNAVAILABLE,
    );
    client.close();
  });
});

describe("SpecgateClient over TLS", () => {
  it("verifies the server against the given CA and completes calls", async (t) => {
    const certificates = makeTestCertificates();
    if (certificates === undefined) {
      t.skip("openssl is not installed");
      return;
    }
    t.after(() => certificates.remove());
    const server = new grpc.Server();
    server.addService(gatewayService, {
      ListModels: (_call: unknown, callback: grpc.sendUnaryData<object>) =>
        callback(null, { models: [{ name: "tls-fixture" }] }),
    });
    const port = await bindServer(
      server,
      "127.0.0.1",
      0,
      serverTlsCredentials({ certFile: certificates.serverCertFile, keyFile: certificates.serverKeyFile }),
    );
    t.after(() => server.forceShutdown());
    const trusted = new SpecgateClient({ address: `127.0.0.1:${port}`, tls: { ca: certificates.ca } });
    assert.equal((await trusted.listModels()).models[0].name, "tls-fixture");
    trusted.close();
    // Plaintext against a TLS server never connects.
    const plaintext = new SpecgateClient({ address: `127.0.0.1:${port}`, retry: { maxAttempts: 1 } });
    await assert.rejects(
      plaintext.listModels({ timeoutMs: 2000 }),
      (error: unknown) => error instanceof SpecgateError && error.codeName !== "OK",
    );
    plaintext.close();
  });
});
