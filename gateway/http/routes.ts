/**
 * The OpenAI-compatible routes: POST /v1/completions and /v1/chat/completions, GET /v1/models and /health. A
 * generation request is mapped onto a GenerateRequest (openai-request.ts) and served by the same core as gRPC calls
 * (requests.ts): API key and tenant, admission, validation, deadline, trace and metrics alike. A client that
 * disconnects cancels its request, which releases its caches as a gRPC cancellation does.
 */
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { streamSSE } from "hono/streaming";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { GenerateRequest__Output } from "../../gen/specgate/v1/GenerateRequest.ts";
import { extractFromCarrier } from "../../services/telemetry/index.ts";
import { identifyCaller } from "../authentication.ts";
import { Aborted, abortWithClient } from "../call-abort.ts";
import type { ServedModel } from "../served-model.ts";
import type { RunningGateway } from "../server.ts";
import type { ChatTemplate } from "./chat-template.ts";
import { HttpError, httpFailure, invalidField } from "./errors.ts";
import { chatRequest, completionRequest, type ResponseOptions } from "./openai-request.ts";
import { ChunkWriter, completionBody, type Endpoint, responseHead } from "./responses.ts";

/** Largest request body, as gRPC's default receive limit. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;
/** Optional request header: the request's deadline, milliseconds from its arrival (gRPC's deadline, over HTTP). */
const TIMEOUT_HEADER = "x-request-timeout-ms";
/** Optional request header: the tenant the request is for (gRPC's tenant_id; with API keys, the key's or none). */
const TENANT_HEADER = "x-tenant-id";

export interface HttpApiContext {
  readonly gateway: Pick<RunningGateway, "requests" | "keys" | "listing" | "admission">;
  readonly model: ServedModel;
  /** The served model's chat template; undefined: chat completions are refused. */
  readonly chatTemplate: ChatTemplate | undefined;
}

function fail(c: Context, error: unknown): Response {
  const failure = httpFailure(error);
  if (failure.retryAfterS !== undefined) c.header("Retry-After", String(failure.retryAfterS));
  return c.json(failure.body, failure.status as ContentfulStatusCode);
}

/** The caller's `authorization` header, as the core reads gRPC metadata. */
function authorization(c: Context): string[] {
  const value = c.req.header("authorization");
  return value === undefined ? [] : [value];
}

function deadlineOf(c: Context): number {
  const value = c.req.header(TIMEOUT_HEADER);
  if (value === undefined) return Number.POSITIVE_INFINITY;
  const ms = Number(value);
  if (!(Number.isInteger(ms) && ms > 0)) {
    throw invalidField(TIMEOUT_HEADER, `the ${TIMEOUT_HEADER} header must be a positive integer, got "${value}"`);
  }
  return Date.now() + ms;
}

async function jsonBody(c: Context): Promise<unknown> {
  try {
    return await c.req.json();
  } catch (error) {
    throw new HttpError(
      400,
      "invalid_request_error",
      `the body is not JSON: ${(error as Error).message}`,
      "invalid_json",
    );
  }
}

export function httpRoutes({ gateway, model: served, chatTemplate }: HttpApiContext): Hono {
  const app = new Hono();

  /** Runs one generation request: as a whole JSON completion, or as server-sent events. */
  const generate = async (
    c: Context,
    endpoint: Endpoint,
    request: GenerateRequest__Output,
    { stream, includeUsage, returnTokenIds }: ResponseOptions,
  ): Promise<Response> => {
    if (request.model !== "" && request.model !== served.name) {
      throw new HttpError(
        404,
        "not_found_error",
        `model "${request.model}" is not served here (this gateway serves "${served.name}")`,
        "model_not_found",
        "model",
      );
    }
    const deadlineMs = deadlineOf(c);
    const signal = c.req.raw.signal;
    const started = await gateway.requests.start({
      transport: { protocol: "http", method: c.req.method, route: c.req.routePath },
      httpStatusOf: (error) => (stream ? 200 : httpFailure(error).status),
      request: { ...request, tenant_id: c.req.header(TENANT_HEADER) ?? "" },
      authorization: authorization(c),
      parent: extractFromCarrier(
        Object.fromEntries(
          ["traceparent", "tracestate", "baggage"].flatMap((key) => {
            const value = c.req.header(key);
            return value === undefined ? [] : [[key, value]];
          }),
        ),
      ),
      watch: (controller) =>
        abortWithClient(
          controller,
          (cancel) => {
            signal.addEventListener("abort", cancel);
            return () => signal.removeEventListener("abort", cancel);
          },
          deadlineMs,
        ),
    });
    const head = responseHead(endpoint, started.requestId, served.name);
    if (!stream) return c.json(completionBody(head, await started.run(() => undefined), returnTokenIds));
    const chunks = new ChunkWriter(head, includeUsage, returnTokenIds);
    return streamSSE(c, async (sse) => {
      const send = (body: object | undefined) =>
        body === undefined ? Promise.resolve() : sse.writeSSE({ data: JSON.stringify(body) });
      void send(chunks.first());
      try {
        const result = await started.run((delta) => void send(chunks.text(delta)));
        await send(chunks.last(result));
        await send(chunks.usage(result));
      } catch (error) {
        if (signal.aborted) return;
        // The status line is gone: the error travels as an event, as OpenAI's streams report it.
        await send(httpFailure(error).body);
      }
      await sse.writeSSE({ data: "[DONE]" });
    });
  };

  app.use(
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: (c) =>
        fail(c, new HttpError(413, "invalid_request_error", `the body exceeds ${MAX_BODY_BYTES} bytes`, "too_large")),
    }),
  );
  // Who calls is settled before anything else is looked at, as for gRPC calls (the core checks again, at no cost that
  // matters): a caller without a valid key learns nothing about models, templates or fields.
  app.use("/v1/*", async (c, next) => {
    const identity = identifyCaller(gateway.keys, authorization(c), c.req.header(TENANT_HEADER) ?? "");
    if (!identity.ok) return fail(c, new Aborted(identity.code, identity.message));
    await next();
  });
  app.get("/health", (c) =>
    gateway.admission.draining ? c.json({ status: "draining" }, 503) : c.json({ status: "ok" }),
  );
  app.get("/v1/models", (c) => {
    const { listing } = gateway;
    return c.json({
      object: "list",
      data: [
        {
          id: served.name,
          object: "model",
          created: 0,
          owned_by: "specgate",
          context_length: served.contextLength,
          drafters: (listing.drafters ?? []).map((d) => d.name),
          default_drafter: listing.default_drafter,
          max_k: listing.max_k,
          max_tokens_limit: listing.max_tokens_limit,
        },
      ],
    });
  });
  app.post("/v1/completions", async (c) => {
    const { generate: request, ...options } = completionRequest(await jsonBody(c));
    return generate(c, "completion", request, options);
  });
  app.post("/v1/chat/completions", async (c) => {
    const { generate: request, messages, ...options } = chatRequest(await jsonBody(c));
    if (chatTemplate === undefined) {
      throw new HttpError(
        400,
        "invalid_request_error",
        `model "${served.name}" has no chat template (no chat_template in its tokenizer_config.json): give the gateway one with --chat-template or SPECGATE_CHAT_TEMPLATE, or use /v1/completions`,
        "no_chat_template",
      );
    }
    const text = chatTemplate.render(messages);
    return generate(c, "chat", { ...request, prompt: "text", text }, options);
  });
  app.notFound((c) =>
    fail(c, new HttpError(404, "not_found_error", `no route ${c.req.method} ${c.req.path}`, "unknown_url")),
  );
  app.onError((error, c) => fail(c, error));
  return app;
}
