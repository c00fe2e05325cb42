/**
 * The gateway's configuration: flags over environment variables, validated at start-up, printed by `--help`.
 * Variables shared with the other services (SPECGATE_TARGET_MODEL, SPECGATE_DRAFTERS, REDIS_URL) mean the same
 * thing everywhere, so the local stack sets each once.
 */
import { z } from "zod";
import { isLoopbackHost } from "../sdk/loopback.ts";
import { type DrafterSpec, parseDrafterSpecs } from "../services/config/drafter-list.ts";
import {
  type ConfigOf,
  integer,
  loadConfig,
  parseConfig,
  port,
  type Settings,
  settingsHelp,
} from "../services/config/settings.ts";
import {
  DRAFTERS_SETTING,
  drainSetting,
  LOG_LEVEL_SETTING,
  metricsPortSetting,
  REDIS_CLUSTER_SETTING,
  REDIS_URL_SETTING,
  TARGET_CACHE_BYTES_SETTING,
  TARGET_MODEL_SETTING,
} from "../services/config/shared-settings.ts";
import { type ClientTlsFiles, type ServerTlsFiles, serverTlsFiles } from "../services/grpc/tls.ts";
import { DEFAULT_STANDBY_MS } from "../services/replica-link/verify-client.ts";
import { NO_DRAFTER } from "./validation.ts";

export const GATEWAY_SETTINGS = {
  host: {
    flag: "host",
    env: "SPECGATE_HOST",
    schema: z.string().min(1).default("127.0.0.1"),
    help: "address to listen on",
  },
  port: { flag: "port", env: "SPECGATE_PORT", schema: port(50051), help: "gRPC port (0: a free one)" },
  httpPort: {
    flag: "http-port",
    env: "SPECGATE_HTTP_PORT",
    schema: z.union([z.literal("off"), port(8000)]).default(8000),
    help: 'OpenAI-compatible HTTP API port, same host and TLS as gRPC (0: a free one; "off": no HTTP API)',
  },
  chatTemplate: {
    flag: "chat-template",
    env: "SPECGATE_CHAT_TEMPLATE",
    schema: z.string().min(1).optional(),
    help: "Jinja chat template file for /v1/chat/completions (unset: the model's tokenizer_config.json chat_template; stories260K models have one built in)",
  },
  model: {
    ...TARGET_MODEL_SETTING,
    help: "target model (directory, or name under models/): its tokenizer and context length",
  },
  redisUrl: REDIS_URL_SETTING,
  redisCluster: REDIS_CLUSTER_SETTING,
  draftAddress: {
    flag: "draft-address",
    env: "SPECGATE_DRAFT_ADDRESS",
    schema: z.string().min(1).default("127.0.0.1:50052"),
    help: "host:port of the draft service",
  },
  draftTlsCa: {
    flag: "draft-tls-ca",
    env: "SPECGATE_DRAFT_TLS_CA",
    schema: z.string().min(1).optional(),
    help: "PEM CA that signed the draft service's certificate: reach it over TLS; unset: plaintext",
  },
  draftTlsCert: {
    flag: "draft-tls-cert",
    env: "SPECGATE_DRAFT_TLS_CLIENT_CERT",
    schema: z.string().min(1).optional(),
    help: "PEM certificate the gateway presents to a draft service that requires client certificates (mutual TLS)",
  },
  draftTlsKey: {
    flag: "draft-tls-key",
    env: "SPECGATE_DRAFT_TLS_CLIENT_KEY",
    schema: z.string().min(1).optional(),
    help: "PEM private key of --draft-tls-cert",
  },
  drafters: {
    ...DRAFTERS_SETTING,
    help: "drafters the draft service serves (NAME=MODEL or NAME=ngram, comma-separated)",
  },
  defaultDrafter: {
    flag: "default-drafter",
    env: "SPECGATE_DEFAULT_DRAFTER",
    schema: z.string().min(1).default("int4"),
    help: 'drafter of requests that name none ("none": plain decoding)',
  },
  k: {
    flag: "k",
    env: "SPECGATE_K",
    schema: z.union([z.literal("adaptive"), z.coerce.number().int().min(0)]).default("adaptive"),
    help: 'speculation length of requests that set none: "adaptive" or a fixed K',
  },
  maxK: {
    flag: "max-k",
    env: "SPECGATE_MAX_K",
    schema: integer(1, 12),
    help: "largest K a request may ask (and the adaptive bound)",
  },
  defaultMaxTokens: {
    flag: "default-max-tokens",
    env: "SPECGATE_DEFAULT_MAX_TOKENS",
    schema: integer(1, 128),
    help: "max_tokens of requests that set none",
  },
  maxTokensLimit: {
    flag: "max-tokens-limit",
    env: "SPECGATE_MAX_TOKENS_LIMIT",
    schema: integer(1, 4096),
    help: "largest max_tokens a request may ask",
  },
  maxInFlight: {
    flag: "max-in-flight",
    env: "SPECGATE_MAX_IN_FLIGHT",
    schema: integer(1, 64),
    help: "requests generating at once; more get RESOURCE_EXHAUSTED",
  },
  maxInFlightPerTenant: {
    flag: "max-in-flight-per-tenant",
    env: "SPECGATE_MAX_IN_FLIGHT_PER_TENANT",
    schema: integer(0, 0),
    help: "requests one tenant may have generating at once; more get RESOURCE_EXHAUSTED (0: only --max-in-flight)",
  },
  maxQueued: {
    flag: "max-queued",
    env: "SPECGATE_MAX_QUEUED",
    schema: integer(0, 16),
    help: "requests that may wait for a slot or KV memory when none is free (0: refuse at once); more get RESOURCE_EXHAUSTED with a retry hint",
  },
  maxQueueMs: {
    flag: "max-queue-ms",
    env: "SPECGATE_MAX_QUEUE_MS",
    schema: integer(1, 1000),
    help: "longest wait in that queue; a request still waiting then gets RESOURCE_EXHAUSTED with a retry hint",
  },
  kvBudgetBytes: {
    flag: "kv-budget-bytes",
    env: "SPECGATE_KV_BUDGET_BYTES",
    schema: integer(0, 0),
    help: "target KV cache bytes the requests in flight may reserve together, prompt + max_tokens each (0: one replica's cache, --target-cache-bytes); more wait or get RESOURCE_EXHAUSTED",
  },
  targetCacheBytes: {
    ...TARGET_CACHE_BYTES_SETTING,
    flag: "target-cache-bytes",
    help: "each target replica's KV cache budget (as the replicas read it): the default KV memory limit, since routing may put every sequence on one replica",
  },
  tlsCert: {
    flag: "tls-cert",
    env: "SPECGATE_TLS_CERT",
    schema: z.string().min(1).optional(),
    help: "PEM certificate chain: serve TLS (with --tls-key); unset: plaintext",
  },
  tlsKey: {
    flag: "tls-key",
    env: "SPECGATE_TLS_KEY",
    schema: z.string().min(1).optional(),
    help: "PEM private key of --tls-cert",
  },
  tlsClientCa: {
    flag: "tls-client-ca",
    env: "SPECGATE_TLS_CLIENT_CA",
    schema: z.string().min(1).optional(),
    help: "PEM CA: mutual TLS, every client must present a certificate it signed",
  },
  apiKeysFile: {
    flag: "api-keys-file",
    env: "SPECGATE_API_KEYS_FILE",
    schema: z.string().min(1).optional(),
    help: "file of TENANT:SHA256HEX lines (specgate keygen): every Gateway call needs one of these keys; unset with --api-keys: no authentication",
  },
  apiKeys: {
    flag: "api-keys",
    env: "SPECGATE_API_KEYS",
    schema: z.string().min(1).optional(),
    help: "TENANT:SHA256HEX entries, comma-separated, accepted beside --api-keys-file",
  },
  verifyTimeoutMs: {
    flag: "verify-timeout-ms",
    env: "SPECGATE_VERIFY_TIMEOUT_MS",
    schema: integer(1, 10_000),
    help: "a verify job unanswered this long is re-sent to another replica (once to the same one when no other is left)",
  },
  verifyStandbyMs: {
    flag: "verify-standby-ms",
    env: "SPECGATE_VERIFY_STANDBY_MS",
    schema: integer(1, DEFAULT_STANDBY_MS),
    help: "a pushed verify job unanswered this long also goes on the replica's queue (its push or reply may be lost; a push nobody heard is queued at once); less than --verify-timeout-ms",
  },
  batchConcurrency: {
    flag: "batch-concurrency",
    env: "SPECGATE_BATCH_CONCURRENCY",
    schema: integer(0, 1),
    help: "batch items this gateway runs at once, each only while a slot stays free for interactive requests (0: run none, only accept batches)",
  },
  batchLockMs: {
    flag: "batch-lock-ms",
    env: "SPECGATE_BATCH_LOCK_MS",
    schema: integer(1000, 30_000),
    help: "a batch item whose gateway died goes back to the queue this long after its last lock renewal",
  },
  batchAttempts: {
    flag: "batch-attempts",
    env: "SPECGATE_BATCH_ATTEMPTS",
    schema: integer(1, 5),
    help: "attempts per batch item before a retryable failure (UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL) becomes its result",
  },
  batchBackoffMs: {
    flag: "batch-backoff-ms",
    env: "SPECGATE_BATCH_BACKOFF_MS",
    schema: integer(1, 1000),
    help: "delay before a batch item's first retry, doubling with each retry",
  },
  metricsPort: {
    ...metricsPortSetting({ env: "SPECGATE_GATEWAY_METRICS_PORT", fallback: 9464 }),
    help: "Prometheus scrape port on 127.0.0.1 (0: a free one; OTEL_SDK_DISABLED=true turns telemetry off)",
  },
  drainMs: drainSetting(30_000, "on SIGTERM, how long in-flight requests may run before they are cancelled"),
  logLevel: LOG_LEVEL_SETTING,
} satisfies Settings;

export type GatewayConfig = ConfigOf<typeof GATEWAY_SETTINGS>;

/** The TLS files of a configuration (undefined: plaintext); throws when they do not make a whole. */
export function gatewayTlsFiles(
  config: Partial<Pick<GatewayConfig, "tlsCert" | "tlsKey" | "tlsClientCa">>,
): ServerTlsFiles | undefined {
  return serverTlsFiles(
    { cert: config.tlsCert, key: config.tlsKey, clientCa: config.tlsClientCa },
    { cert: GATEWAY_SETTINGS.tlsCert, key: GATEWAY_SETTINGS.tlsKey, clientCa: GATEWAY_SETTINGS.tlsClientCa },
  );
}

/** How the gateway reaches the draft service: TLS files when a CA is set (undefined: plaintext on a trusted network). */
export function draftTlsFiles(
  config: Partial<Pick<GatewayConfig, "draftTlsCa" | "draftTlsCert" | "draftTlsKey">>,
): ClientTlsFiles | undefined {
  const { draftTlsCa, draftTlsCert, draftTlsKey } = config;
  if (draftTlsCa === undefined) {
    if (draftTlsCert !== undefined || draftTlsKey !== undefined) {
      throw new TypeError("--draft-tls-cert / --draft-tls-key need TLS to the draft service: set --draft-tls-ca too");
    }
    return undefined;
  }
  if ((draftTlsCert === undefined) !== (draftTlsKey === undefined)) {
    throw new TypeError("a client certificate for the draft service needs both --draft-tls-cert and --draft-tls-key");
  }
  return { caFile: draftTlsCa, certFile: draftTlsCert, keyFile: draftTlsKey };
}

/**
 * The warning for a plaintext gateway reachable from other machines, or undefined. Not an error: in a cluster an
 * Ingress or load balancer usually terminates TLS in front of the gateway.
 */
export function plaintextExposureWarning(host: string, tls: boolean): string | undefined {
  if (tls || isLoopbackHost(host)) return undefined;
  return (
    `the gateway listens on ${host} without TLS: requests, outputs and API keys cross the network in clear. ` +
    "Set --tls-cert and --tls-key (SPECGATE_TLS_CERT, SPECGATE_TLS_KEY) unless TLS is terminated in front of it"
  );
}

/** The drafters the gateway offers; throws when the default drafter is none of them. */
export function offeredDrafters(config: Pick<GatewayConfig, "drafters" | "defaultDrafter">): DrafterSpec[] {
  const drafters = parseDrafterSpecs(config.drafters);
  if (config.defaultDrafter !== NO_DRAFTER && !drafters.some((d) => d.name === config.defaultDrafter)) {
    throw new TypeError(`default drafter "${config.defaultDrafter}" is not among the drafters (${config.drafters})`);
  }
  return drafters;
}

/** Throws when a job whose push was lost would be re-sent before it is queued. */
export function checkVerifyTimings(config: Pick<GatewayConfig, "verifyStandbyMs" | "verifyTimeoutMs">): void {
  if (config.verifyStandbyMs >= config.verifyTimeoutMs) {
    throw new TypeError(
      `the verify standby delay (${config.verifyStandbyMs} ms) must be shorter than the verify timeout (${config.verifyTimeoutMs} ms): otherwise a job whose push was lost is re-sent before it is queued`,
    );
  }
}

export function parseGatewayConfig(input: Record<string, unknown>): GatewayConfig {
  const config = parseConfig(GATEWAY_SETTINGS, input, "gateway");
  gatewayTlsFiles(config);
  draftTlsFiles(config);
  return config;
}

export function loadGatewayConfig(argv: readonly string[], env: NodeJS.ProcessEnv): GatewayConfig | undefined {
  const config = loadConfig(GATEWAY_SETTINGS, argv, env, "gateway");
  if (config !== undefined) {
    gatewayTlsFiles(config);
    draftTlsFiles(config);
  }
  return config;
}

export function gatewayHelp(): string {
  return settingsHelp(
    GATEWAY_SETTINGS,
    "specgate gateway: the public gRPC API and the OpenAI-compatible HTTP API; runs each request's draft → verify rounds over the draft service and the target replicas.",
    "node --import tsx gateway/main.ts [flags]",
  );
}
