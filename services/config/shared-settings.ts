/**
 * The settings several services read: declared once here so a variable means the same thing in every service (the
 * local stack sets each once) and `--help` describes it the same way. A service composes them into its own table,
 * overriding the help line where the setting does something particular there.
 */
import { z } from "zod";
import { MODELS_ROOT } from "../runtime/model-files.ts";
import { runtimeOptionsSchema } from "../runtime/runtime-config.ts";
import { parseDrafterSpecs } from "./drafter-list.ts";
import { integer, port, type Setting } from "./settings.ts";

export const LOG_LEVEL_SETTING = {
  flag: "log-level",
  env: "SPECGATE_LOG_LEVEL",
  schema: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  help: "pino log level",
} satisfies Setting;

/** The model the target replicas verify with (the gateway reads its tokenizer and context length). */
export const TARGET_MODEL_SETTING = {
  flag: "model",
  env: "SPECGATE_TARGET_MODEL",
  schema: z.string().min(1).default("stories260k"),
  help: "target model: a name under the models dir, or a directory",
} satisfies Setting;

export const MODELS_DIR_SETTING = {
  flag: "models-dir",
  env: "SPECGATE_MODELS_DIR",
  schema: z.string().min(1).default(MODELS_ROOT),
  help: "where model names are looked up (npm run models builds them there)",
} satisfies Setting;

export const REDIS_URL_SETTING = {
  flag: "redis-url",
  env: "REDIS_URL",
  schema: z.string().min(1).default("redis://127.0.0.1:6379"),
  help: "Redis holding the verify queues and replica announcements",
} satisfies Setting;

export const REDIS_CLUSTER_SETTING = {
  flag: "redis-cluster",
  env: "REDIS_CLUSTER",
  schema: z
    .enum(["true", "false"])
    .default("false")
    .transform((value) => value === "true"),
  help: "the Redis URL names one node of a Redis Cluster (7 or later): the other nodes are found from it",
} satisfies Setting;

/** Each target replica's KV cache budget (the gateway reserves against it when admitting requests). */
export const TARGET_CACHE_BYTES_SETTING = {
  flag: "cache-bytes",
  env: "SPECGATE_TARGET_CACHE_BYTES",
  schema: integer(1, 1024 * 1024 * 1024),
  help: "cap on the target KV cache bytes of all sequences; idle sequences are evicted least recently used first",
} satisfies Setting;

/** Kept as text (it prints as the default in --help), checked against the grammar; parseDrafterSpecs reads it. */
export const DRAFTERS_SETTING = {
  flag: "drafters",
  env: "SPECGATE_DRAFTERS",
  schema: z
    .string()
    .default("int4=stories260k-int4,early-exit=stories260k-exit4,ngram,lookahead")
    .superRefine((text, ctx) => {
      try {
        parseDrafterSpecs(text);
      } catch (error) {
        ctx.addIssue({ code: "custom", message: (error as Error).message });
      }
    }),
  help: "drafters served, comma-separated: NAME=MODEL (model drafter; a name under the models dir or a path) or NAME=ngram",
} satisfies Setting;

/** How long a service drains on SIGTERM; `help` says what the drain waits for in that service. */
export function drainSetting(fallbackMs: number, help: string) {
  return { flag: "drain-ms", env: "SPECGATE_DRAIN_MS", schema: integer(0, fallbackMs), help } satisfies Setting;
}

/**
 * The Prometheus scrape port; each service has its own variable so that one environment can set all three. The call
 * spells out `env: "..."`, as every settings table does: the deployment checks read a service's variables that way.
 */
export function metricsPortSetting(setting: { readonly env: string; readonly fallback: number }) {
  return {
    flag: "metrics-port",
    env: setting.env,
    schema: port(setting.fallback),
    help: "Prometheus scrape port (0: a free one; OTEL_SDK_DISABLED=true turns telemetry off)",
  } satisfies Setting;
}

export const EXECUTION_PROVIDER_SETTING = {
  flag: "execution-provider",
  env: "SPECGATE_EXECUTION_PROVIDER",
  schema: z.string().min(1).default("cpu"),
  help: "ONNX Runtime execution provider (cpu, cuda, tensorrt, dml, ...)",
} satisfies Setting;

export const DEVICE_ID_SETTING = {
  flag: "device-id",
  env: "SPECGATE_DEVICE_ID",
  schema: integer(0, 0),
  help: "GPU ordinal for providers that take one",
} satisfies Setting;

export const THREAD_SPINNING_SETTING = {
  flag: "thread-spinning",
  env: "SPECGATE_THREAD_SPINNING",
  schema: runtimeOptionsSchema.shape.threadSpinning,
  help: "when ONNX Runtime threads busy-wait: run (only during a model run), always (also ~30 ms after), off",
} satisfies Setting;
