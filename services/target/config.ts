/**
 * The configuration of one target replica: flags over environment variables (services/config/settings.ts), validated
 * at start-up, printed by `--help`. SPECGATE_TARGET_MODEL, REDIS_URL and the runtime settings mean the same as in the
 * gateway and the draft service, so the local stack sets them once.
 */
import { hostname } from "node:os";
import { z } from "zod";
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
  drainSetting,
  EXECUTION_PROVIDER_SETTING,
  LOG_LEVEL_SETTING,
  MODELS_DIR_SETTING,
  metricsPortSetting,
  REDIS_CLUSTER_SETTING,
  REDIS_URL_SETTING,
  TARGET_CACHE_BYTES_SETTING,
  TARGET_MODEL_SETTING,
  THREAD_SPINNING_SETTING,
} from "../config/shared-settings.ts";

export const TARGET_SETTINGS = {
  replicaId: {
    flag: "replica-id",
    env: "SPECGATE_REPLICA_ID",
    schema: z
      .string()
      .regex(/^[A-Za-z0-9._-]+$/, "letters, digits, '.', '_' and '-' only (it names a queue and a Redis key)")
      .default(`target-${hostname()}-${process.pid}`),
    help: "replica id: names its verify queue (verify-{<id>}), its channels and its Redis announcement",
  },
  model: TARGET_MODEL_SETTING,
  modelsDir: MODELS_DIR_SETTING,
  redisUrl: REDIS_URL_SETTING,
  redisCluster: REDIS_CLUSTER_SETTING,
  host: {
    flag: "host",
    env: "SPECGATE_TARGET_HOST",
    schema: z.string().min(1).default("127.0.0.1"),
    help: "address the Target gRPC service (release, stats, health) listens on",
  },
  port: {
    flag: "port",
    env: "SPECGATE_TARGET_PORT",
    schema: port(0),
    help: "gRPC port (0: a free one; the announcement carries the bound address)",
  },
  advertiseHost: {
    flag: "advertise-host",
    env: "SPECGATE_TARGET_ADVERTISE_HOST",
    schema: z.string().min(1).optional(),
    help: "host gateways reach this replica at, when not --host (e.g. the pod IP)",
  },
  maxBatchSize: {
    flag: "max-batch-size",
    env: "SPECGATE_MAX_BATCH_SIZE",
    schema: integer(1, 16).pipe(z.number().max(1024)),
    help: "most sequences verified in one batched forward",
  },
  maxWaitMs: {
    flag: "max-wait-ms",
    env: "SPECGATE_MAX_WAIT_MS",
    schema: z.coerce.number().min(0).max(1000).default(5),
    help: "longest wait for the sequences of recent batches to send their next round before a smaller batch runs (also at most 10% of a batch's run time; a lone stream never waits)",
  },
  executionProvider: EXECUTION_PROVIDER_SETTING,
  deviceId: DEVICE_ID_SETTING,
  intraOpThreads: {
    flag: "intra-op-threads",
    env: "SPECGATE_TARGET_INTRA_OP_THREADS",
    schema: integer(0, 0),
    help: "ONNX Runtime threads inside one operator (0: all cores)",
  },
  threadSpinning: THREAD_SPINNING_SETTING,
  cacheBytes: TARGET_CACHE_BYTES_SETTING,
  drainMs: drainSetting(
    10000,
    "on SIGTERM, how long the jobs in hand may take to finish before the replica closes anyway",
  ),
  metricsPort: metricsPortSetting({ env: "SPECGATE_TARGET_METRICS_PORT", fallback: 9466 }),
  logLevel: LOG_LEVEL_SETTING,
} satisfies Settings;

export type TargetConfig = ConfigOf<typeof TARGET_SETTINGS>;

/** Validates a configuration given as an object (tests, embedding), filling in the defaults. */
export function parseTargetConfig(input: Record<string, unknown>): TargetConfig {
  return parseConfig(TARGET_SETTINGS, input, "target replica");
}

/** The configuration from flags over environment variables; undefined when `--help` was asked for. */
export function loadTargetConfig(argv: readonly string[], env: NodeJS.ProcessEnv): TargetConfig | undefined {
  return loadConfig(TARGET_SETTINGS, argv, env, "target replica");
}

export function targetHelp(): string {
  return settingsHelp(
    TARGET_SETTINGS,
    "specgate target replica: verifies draft tokens from its BullMQ queue in batched forwards across users.",
    "node --import tsx services/target/main.ts [flags]",
  );
}
