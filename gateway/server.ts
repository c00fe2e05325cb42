/**
 * The gateway and its gRPC server: TLS (optionally mutual), the Gateway service's calls handed to the request core
 * (requests.ts: API key per call, per-tenant admission, validation, the round loop of generation.ts), the standard
 * health and reflection services (open without a key), and a graceful drain. Client cancellation and deadlines abort
 * the request's round loop, which releases its caches in the draft and target services. The HTTP API (http/) is
 * served by the same core, on its own listener.
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { GatewayHandlers } from "../gen/specgate/v1/Gateway.ts";
import type { GenerateRequest__Output } from "../gen/specgate/v1/GenerateRequest.ts";
import type { ListModelsResponse } from "../gen/specgate/v1/ListModelsResponse.ts";
import { gatewayService, SERVICE_NAMES } from "../proto/load.ts";
import { type DrafterSpec, isSelfDrafter } from "../services/config/drafter-list.ts";
import { CostModel } from "../services/engine/k-policy.ts";
import { TreePolicy } from "../services/engine/tree-policy.ts";
import { addStandardServices, bindServer, drain, setServing, withinGrace } from "../services/grpc/server.ts";
import { clientTlsCredentials, serverTlsCredentials } from "../services/grpc/tls.ts";
import { openRedis } from "../services/replica-link/redis-target.ts";
import { VerifyClient } from "../services/replica-link/verify-client.ts";
import type { Tokenizer } from "../services/runtime/tokenizer/tokenizer.ts";
import { extractFromMetadata, type SpecgateMetrics } from "../services/telemetry/index.ts";
import { Admission } from "./admission.ts";
import { type ApiKeys, loadApiKeys, watchApiKeys } from "./api-keys.ts";
import { identifyCall } from "./authentication.ts";
import { batchHandlers } from "./batch-calls.ts";
import { BatchQueue } from "./batch-queue.ts";
import { BatchStore } from "./batch-store.ts";
import { abortWithCall } from "./call-abort.ts";
import {
  checkVerifyTimings,
  draftTlsFiles,
  type GatewayConfig,
  gatewayTlsFiles,
  offeredDrafters,
  plaintextExposureWarning,
} from "./config.ts";
import { DraftLink } from "./draft-link.ts";
import type { GenerationServices } from "./generation.ts";
import { ReplicaRouter } from "./replica-router.ts";
import { GATEWAY_SERVER_OPTIONS, metadataProblem } from "./request-limits.ts";
import { GatewayRequests, generateEnd, generateResponse, type IncomingRequest, requestStatus } from "./requests.ts";
import type { ServedModel } from "./served-model.ts";
import { undecodableProblem, withLenientRequests } from "./undecodable.ts";
import { NO_DRAFTER, type ValidationContext } from "./validation.ts";

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
  /** Where every request is served, whatever transport brings it (the HTTP API shares it: http/). */
  readonly requests: GatewayRequests;
  /** The API keys that requests must carry; undefined when authentication is off. */
  readonly keys: ApiKeys | undefined;
  /** The ListModels answer. */
  readonly listing: ListModelsResponse;
  /**
   * Drains: health NOT_SERVING, new requests refused (UNAVAILABLE), in-flight ones finish for up to `graceMs` and are
   * cancelled after it; then the server and every connection close.
   */
  stop(graceMs: number): Promise<void>;
}

export async function startGateway(options: GatewayOptions): Promise<RunningGateway> {
  const { config, model, tokenizer, logger, metrics } = options;
  // Security settings first: a gateway that cannot apply them must not start, let alone serve in the open.
  const tlsFiles = gatewayTlsFiles(config);
  const credentials = tlsFiles && serverTlsCredentials(tlsFiles);
  const keySources = { file: config.apiKeysFile, inline: config.apiKeys };
  const apiKeys = loadApiKeys(keySources);
  if (apiKeys?.size === 0) logger.warn("API keys are on but none is configured: every Gateway call will be refused");
  const drafters = offeredDrafters(config);
  checkVerifyTimings(config);

  const replicas = connectReplicas(config, model, logger, metrics);
  const draftTls = draftTlsFiles(config);
  const draft = new DraftLink({
    address: config.draftAddress,
    proposeTimeoutMs: 2000,
    retryMs: 1000,
    logger,
    credentials: draftTls && clientTlsCredentials(draftTls),
  });
  const admission = new Admission({
    maxInFlight: config.maxInFlight,
    maxInFlightPerTenant: config.maxInFlightPerTenant || Number.POSITIVE_INFINITY,
    maxQueued: config.maxQueued,
    maxQueueMs: config.maxQueueMs,
    kvBudgetBytes: config.kvBudgetBytes || config.targetCacheBytes,
    kvBytesPerToken: model.kvBytesPerToken,
  });
  const requests = new GatewayRequests({
    apiKeys,
    admission,
    validation: validationContext(config, model, tokenizer, drafters),
    services: generationServices({ draft, router: replicas.router, tokenizer, model, logger }),
    model,
    logger,
    metrics,
  });

  const batches = startBatches(config, requests, model, logger);

  const listing = modelListing(config, model, drafters);
  const server = new grpc.Server(GATEWAY_SERVER_OPTIONS);
  server.addService(withLenientRequests(gatewayService), {
    ...gatewayHandlers(requests, apiKeys, model, listing),
    ...batchHandlers({ apiKeys, validation: requests.validation, ...batches, logger }),
  });
  const health = addStandardServices(server, [SERVICE_NAMES.gateway]);
  const port = await bindServer(server, config.host, config.port, credentials);
  const exposure = plaintextExposureWarning(config.host, tlsFiles !== undefined);
  if (exposure) logger.warn({ host: config.host }, exposure);
  await replicas.router.ready();
  setServing(health, SERVICE_NAMES.gateway, true);
  const stopWatchingKeys = apiKeys ? watchApiKeys(apiKeys, keySources, logger) : () => {};

  let stopping: Promise<void> | undefined;
  return {
    address: `${config.host}:${port}`,
    port,
    transport: tlsFiles === undefined ? "plaintext" : tlsFiles.clientCaFile === undefined ? "tls" : "mutual-tls",
    apiKeys: apiKeys?.size,
    admission,
    router: replicas.router,
    requests,
    keys: apiKeys,
    listing,
    stop(graceMs) {
      stopping ??= (async () => {
        stopWatchingKeys();
        setServing(health, SERVICE_NAMES.gateway, false);
        // Batch items stop being taken at once; those running drain with the interactive requests.
        void batches.queue.close();
        await withinGrace(admission.drain(), graceMs);
        requests.abortAll(grpc.status.UNAVAILABLE, "the gateway shut down before the request finished");
        await admission.drain();
        await drain(server, 1000);
        await batches.close();
        draft.shutdown();
        await replicas.close();
      })();
      return stopping;
    },
  };
}

/** The batch store and queue, this gateway's batch worker running on it (unless --batch-concurrency is 0). */
function startBatches(
  config: GatewayConfig,
  requests: GatewayRequests,
  model: ServedModel,
  logger: Logger,
): { readonly store: BatchStore; readonly queue: BatchQueue; close(): Promise<void> } {
  const target = { url: config.redisUrl, cluster: config.redisCluster };
  const redis = openRedis(target, { maxRetriesPerRequest: 2 });
  redis.on("error", (error) => logger.warn({ err: error }, "redis connection error (batches)"));
  const store = new BatchStore(redis);
  const queue = new BatchQueue({
    redis: target,
    store,
    requests,
    model: model.name,
    concurrency: config.batchConcurrency,
    lockMs: config.batchLockMs,
    attempts: config.batchAttempts,
    backoffMs: config.batchBackoffMs,
    logger,
  });
  return {
    store,
    queue,
    async close() {
      await queue.close();
      redis.disconnect();
    },
  };
}

/** The gateway's side of the replicas: their announcements in Redis, the verify client, the router over both. */
function connectReplicas(
  config: GatewayConfig,
  model: ServedModel,
  logger: Logger,
  metrics: SpecgateMetrics | undefined,
): { readonly router: ReplicaRouter; close(): Promise<void> } {
  const target = { url: config.redisUrl, cluster: config.redisCluster };
  const redis = openRedis(target, { maxRetriesPerRequest: 2 });
  redis.on("error", (error) => logger.warn({ err: error }, "redis connection error"));
  const verifyClient = new VerifyClient(target, { standbyMs: config.verifyStandbyMs });
  const router = new ReplicaRouter({
    redis,
    verifyClient,
    model: model.name,
    verifyTimeoutMs: config.verifyTimeoutMs,
    logger,
    metrics,
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
  const shapers = new Map<string, TreePolicy>();
  const costs = (drafter: string) => {
    let model = costModels.get(drafter);
    if (!model) {
      model = new CostModel();
      costModels.set(drafter, model);
    }
    return model;
  };
  return {
    ...parts,
    costs,
    treeShaper(drafter, limit) {
      const key = `${drafter}/${limit.width}x${limit.nodes}`;
      let shaper = shapers.get(key);
      if (!shaper) {
        shaper = new TreePolicy(costs(drafter), limit);
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
    selfDrafters: new Map(drafters.filter(isSelfDrafter).map((d) => [d.name, d.kind])),
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

function gatewayHandlers(
  requests: GatewayRequests,
  apiKeys: ApiKeys | undefined,
  model: ServedModel,
  listing: ListModelsResponse,
): Pick<GatewayHandlers, "Generate" | "GenerateStream" | "ListModels"> {
  const incoming = (method: string, call: RequestCall): IncomingRequest => ({
    transport: { protocol: "grpc", method: `${SERVICE_NAMES.gateway}/${method}` },
    request: call.request,
    authorization: call.metadata.get("authorization").map(String),
    parent: extractFromMetadata(call.metadata),
    watch: (controller) => abortWithCall(call, controller),
    problems: [metadataProblem(call.metadata) ?? []].flat(),
  });
  return {
    Generate(call, callback) {
      requests
        .serve(incoming("Generate", call), () => undefined)
        .then(
          (served) => callback(null, generateResponse(served, model.name)),
          (error: unknown) => callback(requestStatus(error)),
        );
    },
    GenerateStream(call) {
      requests
        .serve(incoming("GenerateStream", call), (delta) => call.write({ delta }))
        .then(
          (served) => {
            call.write({ end: generateEnd(served, model.name) });
            call.end();
          },
          (error: unknown) => {
            if (!call.cancelled) call.emit("error", requestStatus(error));
          },
        );
    },
    ListModels(call, callback) {
      const problem = metadataProblem(call.metadata) ?? undecodableProblem(call.request, "ListModelsRequest");
      if (problem !== undefined) {
        callback({ code: grpc.status.INVALID_ARGUMENT, details: problem });
        return;
      }
      const identity = identifyCall(apiKeys, call.metadata, "");
      if (!identity.ok) {
        callback({ code: identity.code, details: identity.message });
        return;
      }
      callback(null, listing);
    },
  };
}
