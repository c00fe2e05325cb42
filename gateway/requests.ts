/**
 * Generation requests from arrival to outcome, whatever transport brought them (gRPC in server.ts, HTTP in http/):
 * identify the caller (API key → tenant) → admit → validate → trace → run the round loop → release. Refusals and
 * failures are thrown as errors that `requestStatus` turns into the gRPC status the call ends with; the HTTP API maps
 * the same statuses onto HTTP ones, so both transports refuse and fail alike.
 */
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Context } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { GenerateEnd } from "../gen/specgate/v1/GenerateEnd.ts";
import type { GenerateRequest__Output } from "../gen/specgate/v1/GenerateRequest.ts";
import type { GenerateResponse } from "../gen/specgate/v1/GenerateResponse.ts";
import { RETRY_PUSHBACK_TRAILER } from "../sdk/errors.ts";
import { randomSeed } from "../services/engine/rng.ts";
import { VerifyJobError } from "../services/replica-link/verify-errors.ts";
import {
  type RequestTrace,
  type RequestTransport,
  requestSpanName,
  type SpecgateMetrics,
  startRequestTrace,
} from "../services/telemetry/index.ts";
import { type Admission, AdmissionRefused, type Admitted } from "./admission.ts";
import type { ApiKeys } from "./api-keys.ts";
import { identifyCaller } from "./authentication.ts";
import { Aborted, type CallWatch } from "./call-abort.ts";
import { type Delta, type GenerationServices, type Outcome, runGeneration } from "./generation.ts";
import { NoReplicaError } from "./replica-router.ts";
import type { ServedModel } from "./served-model.ts";
import {
  InvalidRequestError,
  shapeProblems,
  type ValidationContext,
  type ValidRequest,
  validateRequest,
} from "./validation.ts";

/** One request as a transport hands it over. */
export interface IncomingRequest {
  /** The gRPC method, or the HTTP method and route: the request's span and duration metric. */
  readonly transport: RequestTransport;
  /** HTTP only: the response status when `error` ends the request (a stream's 200 has gone out before it runs). */
  httpStatusOf?(error: unknown): number;
  readonly request: GenerateRequest__Output;
  /** The `authorization` values the call carried (gRPC metadata or HTTP headers). */
  readonly authorization: readonly string[];
  /** Trace context the caller sent (the root context: a new trace). */
  readonly parent: Context;
  /** Aborts `controller` when the client goes away or the call's deadline passes, until released. */
  watch(controller: AbortController): CallWatch;
  /** What the transport found wrong with the call itself (gRPC metadata over its limits). */
  readonly problems?: readonly string[];
  /**
   * Set for an item of a batch (batch-queue.ts): its tenant, identified when the batch was submitted. It is admitted
   * only into room that interactive requests leave free (admission.ts, `background`).
   */
  readonly batch?: { readonly tenant: string };
}

export interface Served {
  readonly outcome: Outcome;
  readonly requestId: string;
  readonly seed: number;
}

/** The GenerateResponse of a request served: what Generate answers and a batch item's result holds. */
export function generateResponse(served: Served, model: string): GenerateResponse {
  return { token_ids: served.outcome.tokenIds, text: served.outcome.text, ...generateEnd(served, model) };
}

/** What every request ends with: GenerateResponse's fields beside the tokens, and GenerateStream's end message. */
export function generateEnd({ outcome, requestId, seed }: Served, model: string): GenerateEnd {
  return {
    finish_reason: outcome.finishReason,
    stats: outcome.stats,
    usage: { prompt_tokens: outcome.promptTokens, completion_tokens: outcome.tokenIds.length },
    request_id: requestId,
    seed,
    model,
  };
}

/** What serving a request needs besides the request. */
export interface RequestContext {
  readonly apiKeys: ApiKeys | undefined;
  readonly admission: Admission;
  readonly validation: ValidationContext;
  readonly services: GenerationServices;
  readonly model: ServedModel;
  readonly logger: Logger;
  readonly metrics?: SpecgateMetrics;
}

/** The gRPC status a request ends with when `error` ended it; a refusal for lack of room says when to retry. */
export function requestStatus(error: unknown): {
  code: grpc.status;
  details: string;
  metadata?: grpc.Metadata;
  retryAfterMs?: number;
} {
  if (error instanceof AdmissionRefused) {
    if (error.reason === "draining") return { code: grpc.status.UNAVAILABLE, details: error.message };
    const metadata = new grpc.Metadata();
    if (error.retryAfterMs !== undefined) metadata.set(RETRY_PUSHBACK_TRAILER, String(error.retryAfterMs));
    return {
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: error.message,
      metadata,
      retryAfterMs: error.retryAfterMs,
    };
  }
  if (error instanceof InvalidRequestError) return { code: grpc.status.INVALID_ARGUMENT, details: error.message };
  if (error instanceof Aborted) return { code: error.code, details: error.message };
  if (error instanceof NoReplicaError) return { code: grpc.status.UNAVAILABLE, details: error.message };
  if (error instanceof VerifyJobError) {
    // FAILED_PRECONDITION: no replica serves what the request needs (another model, a self-drafter its model lacks).
    const code =
      error.code === "RESOURCE_EXHAUSTED" ||
      error.code === "DEADLINE_EXCEEDED" ||
      error.code === "UNAVAILABLE" ||
      error.code === "FAILED_PRECONDITION"
        ? grpc.status[error.code]
        : grpc.status.INTERNAL;
    return { code, details: `verification failed: ${error.message}` };
  }
  return { code: grpc.status.INTERNAL, details: error instanceof Error ? error.message : String(error) };
}

/** A request admitted and valid, its trace open: `run` it (exactly once) to its outcome. */
export interface StartedRequest {
  readonly requestId: string;
  readonly valid: ValidRequest;
  /** Runs the round loop, `onDelta` receiving each round's new tokens, and releases the request's slot. */
  run(onDelta: (delta: Delta) => void): Promise<Served>;
}

/** The requests of a gateway: each one from its arrival to its outcome, and those still running when it stops. */
export class GatewayRequests {
  readonly #running = new Set<AbortController>();

  constructor(private readonly context: RequestContext) {}

  /** How requests are checked here (batch items are checked the same way when their batch is submitted). */
  get validation(): ValidationContext {
    return this.context.validation;
  }

  /**
   * Identifies, validates and admits the request (waiting in the admission queue if it must); rejects with what
   * refuses it, nothing held then.
   */
  async start(incoming: IncomingRequest): Promise<StartedRequest> {
    // Malformed or oversized calls are refused before the key check and admission: nothing of theirs is looked at.
    const problems = [...(incoming.problems ?? []), ...shapeProblems(incoming.request)];
    if (problems.length > 0) throw new InvalidRequestError(problems);
    const tenant = incoming.batch?.tenant ?? this.#identify(incoming);
    const controller = new AbortController();
    this.#running.add(controller);
    const watch = incoming.watch(controller);
    const request = { ...incoming.request, tenant_id: tenant };
    const requestId = request.request_id || randomUUID();
    const log = this.context.logger.child({ requestId, tenant: request.tenant_id });
    let admitted: Admitted | undefined;
    const finish = () => {
      watch.release();
      this.#running.delete(controller);
      admitted?.release();
    };
    let valid: ValidRequest;
    try {
      // Validation first: a bad request is told so even while the gateway is full, and it reserves nothing.
      valid = validateRequest(request, this.context.validation, randomSeed());
      admitted = await this.context.admission.admit({
        tenant,
        kvTokens: Math.min(valid.prompt.length + valid.maxNewTokens, this.context.validation.contextLength),
        signal: controller.signal,
        background: incoming.batch !== undefined,
      });
    } catch (error) {
      finish();
      // Aborted while queued (client gone, deadline, drain): that, not the admission's rejection, is the outcome.
      const reason = controller.signal.aborted ? controller.signal.reason : error;
      const status = requestStatus(reason);
      log.info({ code: grpc.status[status.code], details: status.details }, "request ended early");
      throw reason;
    }
    const trace = this.#trace(incoming.transport, incoming.parent, valid);
    const http = incoming.transport.protocol === "http";
    return {
      requestId,
      valid,
      run: async (onDelta) => {
        try {
          const outcome = await runGeneration(
            valid,
            { requestId, sequenceId: randomUUID() },
            this.context.services,
            trace,
            controller.signal,
            watch.deadlineMs,
            onDelta,
          );
          trace.end({
            stats: outcome.stats,
            inputTokens: outcome.promptTokens,
            finishReason: outcome.finishReason.replace("FINISH_REASON_", "").toLowerCase(),
            status: "OK",
            ...(http && { httpStatusCode: 200 }),
          });
          log.info(
            {
              finish: outcome.finishReason,
              tokens: outcome.tokenIds.length,
              rounds: outcome.stats.rounds,
              alpha: outcome.stats.alpha,
              drafter: valid.drafter,
            },
            "request done",
          );
          return { outcome, requestId, seed: valid.sampling.seed };
        } catch (error) {
          const reason = controller.signal.aborted ? controller.signal.reason : error;
          const status = requestStatus(reason);
          trace.end({
            stats: { rounds: 0, generated_tokens: 0, draft_tokens: 0, accepted_tokens: 0 },
            inputTokens: 0,
            finishReason: "error",
            status: grpc.status[status.code],
            ...(incoming.httpStatusOf && { httpStatusCode: incoming.httpStatusOf(reason) }),
          });
          if (status.code === grpc.status.INTERNAL) log.error({ err: reason }, "request failed");
          else log.info({ code: grpc.status[status.code], details: status.details }, "request ended early");
          throw reason;
        } finally {
          finish();
        }
      },
    };
  }

  /** Runs one request to its outcome: `start`, then `run`. */
  async serve(incoming: IncomingRequest, onDelta: (delta: Delta) => void): Promise<Served> {
    return await (await this.start(incoming)).run(onDelta);
  }

  /** Ends every request still running with `code` (the drain's grace is over). */
  abortAll(code: grpc.status, message: string): void {
    for (const controller of this.#running) controller.abort(new Aborted(code, message));
  }

  /** The caller's tenant, once its key is accepted; throws the status that refuses it. */
  #identify(incoming: IncomingRequest): string {
    const identity = identifyCaller(this.context.apiKeys, incoming.authorization, incoming.request.tenant_id);
    if (!identity.ok) {
      this.context.logger.info(
        { method: requestSpanName(incoming.transport), code: grpc.status[identity.code], details: identity.message },
        "call refused",
      );
      throw new Aborted(identity.code, identity.message);
    }
    return identity.tenant;
  }

  #trace(transport: RequestTransport, parent: Context, valid: ValidRequest): RequestTrace {
    return startRequestTrace({
      transport,
      parent,
      labels: { tenant: valid.tenantId, model: this.context.model.name, drafter: valid.drafter },
      parameters: {
        maxTokens: valid.maxNewTokens,
        temperature: valid.sampling.temperature,
        topK: valid.sampling.top_k,
        topP: valid.sampling.top_p,
        seed: valid.sampling.seed,
      },
      metrics: this.context.metrics,
    });
  }
}
