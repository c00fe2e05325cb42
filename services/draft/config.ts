/**
 * The draft service's configuration: flags over environment variables (services/config/settings.ts), validated at
 * start-up, printed by `--help`. SPECGATE_DRAFTERS means the same list in the gateway, so the local stack sets it once.
 */
import { z } from "zod";
import { isSelfDrafter, parseDrafterSpecs, type ServiceDrafterSpec } from "../config/drafter-list.ts";
import {
  type ConfigOf,
  integer,
  loadConfig,
  parseConfig,
  port,
  type Settings,
  settingsHelp,
} from "../config/settings.ts";
import {
  DEVICE_ID_SETTING,
  DRAFTERS_SETTING,
  drainSetting,
  EXECUTION_PROVIDER_SETTING,
  LOG_LEVEL_SETTING,
  MODELS_DIR_SETTING,
  metricsPortSetting,
  REDIS_CLUSTER_SETTING,
  REDIS_URL_SETTING,
  THREAD_SPINNING_SETTING,
} from "../config/shared-settings.ts";
import { type ServerTlsFiles, serverTlsFiles } from "../grpc/tls.ts";
import type { RedisTarget } from "../replica-link/redis-target.ts";

export const DRAFT_SETTINGS = {
  host: {
    flag: "host",
    env: "SPECGATE_DRAFT_HOST",
    schema: z.string().min(1).default("127.0.0.1"),
    help: "address to listen on",
  },
  port: { flag: "port", env: "SPECGATE_DRAFT_PORT", schema: port(50052), help: "gRPC port (0: a free one)" },
  tlsCert: {
    flag: "tls-cert",
    env: "SPECGATE_DRAFT_TLS_CERT",
    schema: z.string().min(1).optional(),
    help: "PEM certificate chain: serve TLS (with --tls-key; the gateway then needs --draft-tls-ca); unset: plaintext",
  },
  tlsKey: {
    flag: "tls-key",
    env: "SPECGATE_DRAFT_TLS_KEY",
    schema: z.string().min(1).optional(),
    help: "PEM private key of --tls-cert",
  },
  tlsClientCa: {
    flag: "tls-client-ca",
    env: "SPECGATE_DRAFT_TLS_CLIENT_CA",
    schema: z.string().min(1).optional(),
    help: "PEM CA: mutual TLS, only clients (the gateways) presenting a certificate it signed are served",
  },
  modelsDir: MODELS_DIR_SETTING,
  drafters: DRAFTERS_SETTING,
  cacheBytes: {
    flag: "cache-bytes",
    env: "SPECGATE_DRAFT_CACHE_BYTES",
    schema: integer(1, 256 * 1024 * 1024),
    help: "cap on the draft KV cache bytes of all sequences; least recently used caches are evicted beyond it",
  },
  draftOnVerdict: {
    flag: "draft-on-verdict",
    env: "SPECGATE_DRAFT_ON_VERDICT",
    schema: z
      .enum(["true", "false"])
      .default("false")
      .transform((value) => value === "true"),
    help: "draft each round on the target replica's verdict, heard through Redis (needs --redis-url), without waiting for the gateway (measure it first: README, figures)",
  },
  redisUrl: {
    ...REDIS_URL_SETTING,
    // Only drafting on verdicts needs a Redis; unset, the service runs without one.
    schema: z.string().default(""),
    help: "Redis where target replicas publish their verdicts (read with --draft-on-verdict)",
  },
  redisCluster: REDIS_CLUSTER_SETTING,
  executionProvider: EXECUTION_PROVIDER_SETTING,
  deviceId: DEVICE_ID_SETTING,
  intraOpThreads: {
    flag: "intra-op-threads",
    env: "SPECGATE_DRAFT_INTRA_OP_THREADS",
    schema: integer(0, 0),
    help: "ONNX Runtime threads inside one operator, per model (0: all cores)",
  },
  threadSpinning: THREAD_SPINNING_SETTING,
  metricsPort: metricsPortSetting({ env: "SPECGATE_DRAFT_METRICS_PORT", fallback: 9465 }),
  drainMs: drainSetting(5000, "on SIGTERM, how long running proposals may take before the server stops"),
  logLevel: LOG_LEVEL_SETTING,
} satisfies Settings;

export type DraftConfig = ConfigOf<typeof DRAFT_SETTINGS>;

/** The draft service's TLS files (undefined: plaintext); throws when they do not make a whole. */
export function draftServerTlsFiles(
  config: Partial<Pick<DraftConfig, "tlsCert" | "tlsKey" | "tlsClientCa">>,
): ServerTlsFiles | undefined {
  return serverTlsFiles(
    { cert: config.tlsCert, key: config.tlsKey, clientCa: config.tlsClientCa },
    { cert: DRAFT_SETTINGS.tlsCert, key: DRAFT_SETTINGS.tlsKey, clientCa: DRAFT_SETTINGS.tlsClientCa },
  );
}

/** Validates a configuration given as an object (tests, embedding), filling in the defaults. */
export function parseDraftConfig(input: Record<string, unknown>): DraftConfig {
  return parseConfig(DRAFT_SETTINGS, input, "draft service");
}

/** The configuration from flags over environment variables; undefined when `--help` was asked for. */
export function loadDraftConfig(argv: readonly string[], env: NodeJS.ProcessEnv): DraftConfig | undefined {
  return loadConfig(DRAFT_SETTINGS, argv, env, "draft service");
}

/** The Redis to hear verdicts on: undefined unless drafting on verdicts, which without a Redis URL is an error. */
export function verdictRedis(config: DraftConfig): RedisTarget | undefined {
  if (!config.draftOnVerdict) return undefined;
  if (config.redisUrl === "") {
    throw new Error(
      "--draft-on-verdict (SPECGATE_DRAFT_ON_VERDICT) needs --redis-url (REDIS_URL) to hear the verdicts on",
    );
  }
  return { url: config.redisUrl, cluster: config.redisCluster };
}

/** The drafters a validated configuration lists, but for the self-drafters, which the target replicas run. */
export function servedDrafters(config: DraftConfig): ServiceDrafterSpec[] {
  return parseDrafterSpecs(config.drafters).filter((spec): spec is ServiceDrafterSpec => !isSelfDrafter(spec));
}

export function draftHelp(): string {
  return settingsHelp(
    DRAFT_SETTINGS,
    "specgate draft service: proposes draft tokens for many sequences (one gRPC stream per gateway), holding a draft KV cache per sequence.",
    "node --import tsx services/draft/main.ts [flags]",
  );
}
