/**
 * The Gateway gRPC server: TLS (optionally mutual), API-key authentication of every Gateway call (authentication.ts;
 * health and reflection stay open), per-tenant admission, validation, the round loop per request (generation.ts), the
 * standard health and reflection services, and a graceful drain. Client cancellation and deadlines abort the request's round loop,
 * which releases its caches in the draft and target services.
 */
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { GatewayHandlers } from "../gen/specgate/v1/Gateway.ts";
import type { GenerateRequest__Output } from "../gen/specgate/v1/GenerateRequest.ts";
import type { ListModelsResponse } from "../gen/specgate/v1/ListModelsResponse.ts";
import { gatewayService, SERVICE_NAMES } from "../proto/load.ts";
import type { DrafterSpec } from "../services/config/drafter-list.ts";
import { CostModel } from "../services/engine/k-policy.ts";
import { randomSeed } from "../services/engine/rng.ts";
import { AdaptiveTreeShape } from "../services/engine/tree-policy.ts";
import {
  addStandardServices,
  bindServer,
  drain,
  serverTlsCredentials,
  setServing,
  withinGrace,
} from "../services/grpc/server.ts";
import { VerifyClient } from "../services/replica-link/verify-client.ts";
import { VerifyJobError } from "../services/replica-link/verify-errors.ts";
import type { Tokenizer } from "../services/runtime/tokenizer/tokenizer.ts";
import {
  extractFromMetadata,
  type RequestTrace,
  type SpecgateMetrics,
  startRequestTrace,
} from "../services/telemetry/index.ts";
import { Admission, type Admitted } from "./admission.ts";
import { type ApiKeys, loadApiKeys } from "./api-keys.ts";
import { identifyCall } from "./authentication.ts";
import { Aborted, abortWithCall } from "./call-abort.ts";
import {
  checkVerifyTimings,
  type GatewayConfig,
  gatewayTlsFiles,
  offeredDrafters,
  plaintextExposureWarning,
} from "./config.ts";
import { DraftLink } from "./draft-link.ts";
import { type Delta, type GenerationServices, type Outcome, runGeneration } from "./generation.ts";
import { NoReplicaError, ReplicaRouter } from "./replica-router.ts";
import type { ServedModel } from "./served-model.ts";
import {
  InvalidRequestError,
  NO_DRAFTER,
  type ValidationContext,
  type ValidRequest,
  validateRequest,
} from "./validation.ts";

export interface GatewayOptions {
  readonly config: GatewayConfig;
  readonly model: ServedModel;
  readonly tokenizer: Tokenizer;
  readonly logger: Logger;
  readonly metrics?: SpecgateMetrics;
}

export interface RunningGateway {
  /** host:port as bound. */
  readonly address: string;
  readonly port: number;
  /** How clients connect: plaintext, TLS, or TLS with client certificates required. */
  readonly transport: "plaintext" | "tls" | "mutual-tls";
  /** Configured API keys; undefined when authentication is off. */
  readonly apiKeys: number | undefined;
  readonly admission: Admission;
  readonly router: ReplicaRouter;
  /**
   * Drains: health NOT_SERVING, new requests refused (UNAVAILABLE), in-flight ones finish for up to `graceMs` and are
   * cancelled after it; then the server and every connection close.
   */
  stop(graceMs: number): Promise<void>;
}

function toStatus(error: unknown): { code: grpc.status; details: string } {
  if (error instanceof InvalidRequestError) return { code: grpc.status.INVALID_ARGUMENT, details: error.message };
  if (error instanceof Aborted) return { code: error.code, details: error.message };
  if (error instanceof NoReplicaError) return { code: grpc.status.UNAVAILABLE, details: error.message };
  if (error instanceof VerifyJobError) {
    const code =
      error.code === "RESOURCE_EXHAUSTED" || error.code === "DEADLINE_EXCEEDED" || error.code === "UNAVAILABLE"
        ? grpc.status[error.code]
        : grpc.status.INTERNAL;
    return { code, details: `verification failed: ${error.message}` };
  }
  return { code: grpc.status.INTERNAL, details: error instanceof Error ? error.message : String(error) };
}

export async function startGateway(options: GatewayOptions): Promise<RunningGateway> {
  const { config, model, tokenizer, logger, metrics } = options;
  // Security settings first: a gateway that cannot apply them must not start, let alone serve in the open.
  const tlsFiles = gatewayTlsFiles(config);
  const credentials = tlsFiles && serverTlsCredentials(tlsFiles);
  const apiKeys = loadApiKeys({ file: config.apiKeysFile, inline: config.apiKeys });
  if (apiKeys?.size === 0) logger.warn("API keys are on but none is configured: every Gateway call will be refused");
  const drafters = offeredDrafters(config);
  checkVerifyTimings(config);

  const replicas = connectReplicas(config, model, logger);
  const draft = new DraftLink({ address: config.draftAddress, proposeTimeoutMs: 2000, retryMs: 1000, logger });
  const admission = new Admission(config.maxInFlight, config.maxInFlightPerTenant || Number.POSITIVE_INFINITY);
  const requests = new GatewayRequests({
    apiKeys,
    admission,
    validation: validationContext(config, model, tokenizer, drafters),
    services: generationServices({ draft, router: replicas.router, tokenizer, model, logger }),
    model,
    logger,
    metrics,
  });

  const server = new grpc.Server();
  server.addService(gatewayService, gatewayHandlers(requests, apiKeys, model, modelListing(config, model, drafters)));
  const health = addStandardServices(server, [SERVICE_NAMES.gateway]);
  const port = await bindServer(server, config.host, config.port, credentials);
  const exposure = plaintextExposureWarning(config.host, tlsFiles !== undefined);
  if (exposure) logger.warn({ host: config.host }, exposure);
  await replicas.router.ready();
  setServing(health, SERVICE_NAMES.gateway, true);

  let stopping: Promise<void> | undefined;
  return {
    address: `${config.host}:${port}`,
    port,
    transport: tlsFiles === undefined ? "plaintext" : tlsFiles.clientCaFile === undefined ? "tls" : "mutual-tls",
    apiKeys: apiKeys?.size,
    admission,
    router: replicas.router,
    stop(graceMs) {
      stopping ??= (async () => {
        setServing(health, SERVICE_NAMES.gateway, false);
        await withinGrace(admission.drain(), graceMs);
        requests.abortAll(grpc.status.UNAVAILABLE, "the gateway shut down before the request finished");
        await admission.drain();
        await drain(server, 1000);
        draft.shutdown();
        await replicas.close();
      })();
      return stopping;
    },
  };
}

/** The gateway's side of the replicas: their announcements in Redis, the verify client, the router over both. */
function connectReplicas(
  config: GatewayConfig,
  model: ServedModel,
  logger: Logger,
): { readonly router: ReplicaRouter; close(): Promise<void> } {
  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: 2 });
  redis.on("error", (error) => logger.warn({ err: error }, "redis connection error"));
  const verifyClient = new VerifyClient(config.redisUrl, { standbyMs: config.verifyStandbyMs });
  const router = new ReplicaRouter({
    redis,
    verifyClient,
    model: model.name,
    verifyTimeoutMs: config.verifyTimeoutMs,
    logger,
  });
  return {
    router,
    async close() {
      router.close();
      await verifyClient.close();
      redis.disconnect();
    },
  };
}

/**
 * What the round loop runs on, with one cost model per drafter and one tree shape policy per drafter and shape, each
 * shared by all their requests.
 */
function generationServices(parts: Omit<GenerationServices, "costs" | "treeShaper">): GenerationServices {
  const costModels = new Map<string, CostModel>();
  const shapers = new Map<string, AdaptiveTreeShape>();
  return {
    ...parts,
    costs(drafter) {
      let costs = costModels.get(drafter);
      if (!costs) {
        costs = new CostModel();
        costModels.set(drafter, costs);
      }
      return costs;
    },
    treeShaper(drafter, { width, nodes }) {
      const key = `${drafter}/${width}x${nodes}`;
      let shaper = shapers.get(key);
      if (!shaper) {
        shaper = new AdaptiveTreeShape([{ width, nodes }]);
        shapers.set(key, shaper);
      }
      return shaper;
    },
  };
}

function validationContext(
  config: GatewayConfig,
  model: ServedModel,
  tokenizer: Tokenizer,
  drafters: readonly DrafterSpec[],
): ValidationContext {
  return {
    model: model.name,
    contextLength: model.contextLength,
    vocabSize: model.vocabSize,
    encode: (text) => tokenizer.encode(text, { bos: true }),
    drafters: drafters.map((d) => d.name),
    defaultDrafter: config.defaultDrafter,
    defaultK: config.k,
    maxK: config.maxK,
    defaultMaxTokens: config.defaultMaxTokens,
    maxTokensLimit: config.maxTokensLimit,
  };
}

/** The ListModels answer: the served model, its drafters and "none", and the limits a request must keep to. */
function modelListing(config: GatewayConfig, model: ServedModel, drafters: readonly DrafterSpec[]): ListModelsResponse {
  return {
    models: [
      {
        name: model.name,
        vocab_size: model.vocabSize,
        context_length: model.contextLength,
        bos_token_id: model.bosTokenId ?? 0,
        eos_token_id: model.eosTokenId ?? 0,
      },
    ],
    drafters: [
      ...drafters.map((d) => ({ name: d.name, kind: d.kind, model: d.kind === "model" ? d.model : "" })),
      { name: NO_DRAFTER, kind: "none", model: "" },
    ],
    default_drafter: config.defaultDrafter,
    max_tokens_limit: config.maxTokensLimit,
    max_k: config.maxK,
  };
}

type RequestCall =
  | grpc.ServerUnaryCall<GenerateRequest__Output, unknown>
  | grpc.ServerWritableStream<GenerateRequest__Output, unknown>;

interface Served {
  readonly outcome: Outcome;
  readonly requestId: string;
  readonly seed: number;
}

/** What serving a request needs besides its call. */
interface RequestContext {
  readonly apiKeys: ApiKeys | undefined;
  readonly admission: Admission;
  readonly validation: ValidationContext;
  readonly services: GenerationServices;
  readonly model: ServedModel;
  readonly logger: Logger;
  readonly metrics?: SpecgateMetrics;
}

/** The Generate requests: each one from its call to its outcome, and those still running when the gateway stops. */
class GatewayRequests {
  readonly #running = new Set<AbortController>();

  constructor(private readonly context: RequestContext) {}

  /** Runs one request for either RPC; `onDelta` receives the streamed rounds. */
  async serve(method: string, call: RequestCall, onDelta: (delta: Delta) => void): Promise<Served> {
    const { tenant, admitted } = this.#admit(method, call);
    const controller = new AbortController();
    this.#running.add(controller);
    const watch = abortWithCall(call, controller);
    const request = { ...call.request, tenant_id: tenant };
    const requestId = request.request_id || randomUUID();
    const log = this.context.logger.child({ requestId, tenant: request.tenant_id });
    let trace: RequestTrace | undefined;
    try {
      const valid = validateRequest(request, this.context.validation, randomSeed());
      trace = this.#trace(method, call, valid);
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
      const status = toStatus(reason);
      trace?.end({
        stats: { rounds: 0, generated_tokens: 0, draft_tokens: 0, accepted_tokens: 0 },
        inputTokens: 0,
        finishReason: "error",
        status: grpc.status[status.code],
      });
      if (status.code === grpc.status.INTERNAL) log.error({ err: reason }, "request failed");
      else log.info({ code: grpc.status[status.code], details: status.details }, "request ended early");
      throw reason;
    } finally {
      watch.release();
      this.#running.delete(controller);
      admitted.release();
    }
  }

  /** Ends every request still running with `code` (the drain's grace is over). */
  abortAll(code: grpc.status, message: string): void {
    for (const controller of this.#running) controller.abort(new Aborted(code, message));
  }

  /** The caller's tenant, once its key is accepted and a slot is free; throws the status that refuses it. */
  #admit(method: string, call: RequestCall): { tenant: string; admitted: Admitted } {
    const identity = identifyCall(this.context.apiKeys, call.metadata, call.request.tenant_id);
    if (!identity.ok) {
      this.context.logger.info({ method, code: grpc.status[identity.code], details: identity.message }, "call refused");
      throw new Aborted(identity.code, identity.message);
    }
    const admitted = this.context.admission.admit(identity.tenant);
    if (!admitted.admitted) {
      throw new Aborted(
        admitted.reason === "draining" ? grpc.status.UNAVAILABLE : grpc.status.RESOURCE_EXHAUSTED,
        admitted.message,
      );
    }
    return { tenant: identity.tenant, admitted };
  }

  #trace(method: string, call: RequestCall, valid: ValidRequest): RequestTrace {
    return startRequestTrace({
      method,
      parent: extractFromMetadata(call.metadata),
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

function gatewayHandlers(
  requests: GatewayRequests,
  apiKeys: ApiKeys | undefined,
  model: ServedModel,
  listing: ListModelsResponse,
): GatewayHandlers {
  /** What both RPCs answer at the end of a request (GenerateResponse's fields, GenerateStream's end message). */
  const ending = ({ outcome, requestId, seed }: Served) => ({
    finish_reason: outcome.finishReason,
    stats: outcome.stats,
    usage: { prompt_tokens: outcome.promptTokens, completion_tokens: outcome.tokenIds.length },
    request_id: requestId,
    seed,
    model: model.name,
  });
  return {
    Generate(call, callback) {
      requests
        .serve(`${SERVICE_NAMES.gateway}/Generate`, call, () => undefined)
        .then(
          (served) =>
            callback(null, { token_ids: served.outcome.tokenIds, text: served.outcome.text, ...ending(served) }),
          (error: unknown) => callback(toStatus(error)),
        );
    },
    GenerateStream(call) {
      requests
        .serve(`${SERVICE_NAMES.gateway}/GenerateStream`, call, (delta) => call.write({ delta }))
        .then(
          (served) => {
            call.write({ end: ending(served) });
            call.end();
          },
          (error: unknown) => {
            if (!call.cancelled) call.emit("error", toStatus(error));
          },
        );
    },
    ListModels(call, callback) {
      const identity = identifyCall(apiKeys, call.metadata, "");
      if (!identity.ok) {
        callback({ code: identity.code, details: identity.message });
        return;
      }
      callback(null, listing);
    },
  };
}
