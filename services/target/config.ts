/**
 * The configuration of one target replica: flags over environment variables (services/config/settings.ts), validated
 * at start-up, printed by `--help`. SPECGATE_TARGET_MODEL, REDIS_URL and the runtime settings mean the same as in the
 * gateway and the draft service, so the local stack sets them once.
 */
import { hostname } from "node:os";
import { z } from "zod";
import {
  type ConfigOf,
  LOG_LEVEL_SETTING,
  loadConfig,
  parseConfig,
  type Settings,
  settingsHelp,
  THREAD_SPINNING_SETTING,
} from "../config/settings.ts";
import { MODELS_ROOT } from "../runtime/model-files.ts";

const integer = (min: number, fallback: number) => z.coerce.number().int().min(min).default(fallback);

export const TARGET_SETTINGS = {
  replicaId: {
    flag: "replica-id",
    env: "SPECGATE_REPLICA_ID",
    schema: z
      .string()
      .regex(/^[A-Za-z0-9._-]+$/, "letters, digits, '.', '_' and '-' only (it names a queue and a Redis key)")
      .default(`target-${hostname()}-${process.pid}`),
    help: "replica id: names its verify queue (verify-<id>) and its Redis announcement",
  },
  model: {
    flag: "model",
    env: "SPECGATE_TARGET_MODEL",
    schema: z.string().min(1).default("stories260k"),
    help: "target model: a name under the models dir, or a directory",
  },
  modelsDir: {
    flag: "models-dir",
    env: "SPECGATE_MODELS_DIR",
    schema: z.string().min(1).default(MODELS_ROOT),
    help: "where model names are looked up (npm run models builds them there)",
  },
  redisUrl: {
    flag: "redis-url",
    env: "REDIS_URL",
    schema: z.string().min(1).default("redis://127.0.0.1:6379"),
    help: "Redis holding the verify queues and replica announcements",
  },
  host: {
    flag: "host",
    env: "SPECGATE_TARGET_HOST",
    schema: z.string().min(1).default("127.0.0.1"),
    help: "address the Target gRPC service (release, stats, health) listens on",
  },
  port: {
    flag: "port",
    env: "SPECGATE_TARGET_PORT",
    schema: integer(0, 0).pipe(z.number().max(65535)),
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
  executionProvider: {
    flag: "execution-provider",
    env: "SPECGATE_EXECUTION_PROVIDER",
    schema: z.string().min(1).default("cpu"),
    help: "ONNX Runtime execution provider (cpu, cuda, tensorrt, dml, ...)",
  },
  deviceId: {
    flag: "device-id",
    env: "SPECGATE_DEVICE_ID",
    schema: integer(0, 0),
    help: "GPU ordinal for providers that take one",
  },
  intraOpThreads: {
    flag: "intra-op-threads",
    env: "SPECGATE_TARGET_INTRA_OP_THREADS",
    schema: integer(0, 0),
    help: "ONNX Runtime threads inside one operator (0: all cores)",
  },
  threadSpinning: THREAD_SPINNING_SETTING,
  cacheBytes: {
    flag: "cache-bytes",
    env: "SPECGATE_TARGET_CACHE_BYTES",
    schema: integer(1, 1024 * 1024 * 1024),
    help: "cap on the target KV cache bytes of all sequences; idle sequences are evicted least recently used first",
  },
  drainMs: {
    flag: "drain-ms",
    env: "SPECGATE_DRAIN_MS",
    schema: integer(0, 10000),
    help: "on SIGTERM, how long the jobs in hand may take to finish before the replica closes anyway",
  },
  metricsPort: {
    flag: "metrics-port",
    env: "SPECGATE_TARGET_METRICS_PORT",
    schema: integer(0, 9466).pipe(z.number().max(65535)),
    help: "Prometheus scrape port (0: a free one; OTEL_SDK_DISABLED=true turns telemetry off)",
  },
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
