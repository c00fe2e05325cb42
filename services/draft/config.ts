/**
 * The draft service's configuration: one schema, read from environment variables and overridden by command-line
 * flags, validated at start-up and printed by `--help`.
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { MODELS_ROOT } from "../runtime/model-files.ts";
import { type DrafterSpec, parseDrafterSpecs } from "./drafters.ts";

const MIB = 1024 * 1024;

const drafterList = z.string().transform((text, ctx): DrafterSpec[] => {
  try {
    return parseDrafterSpecs(text);
  } catch (error) {
    ctx.addIssue({ code: "custom", message: (error as Error).message });
    return z.NEVER;
  }
});

const integer = (min: number) => z.coerce.number().int().min(min);

export const draftConfigSchema = z.object({
  host: z.string().min(1),
  port: integer(0).max(65535),
  modelsDir: z.string().min(1),
  drafters: drafterList,
  cacheBytes: integer(1),
  executionProvider: z.string().min(1),
  deviceId: integer(0),
  threads: integer(0),
  metricsPort: integer(0).max(65535),
  drainMs: integer(0),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
});

export type DraftConfig = z.output<typeof draftConfigSchema>;

interface Setting {
  readonly key: keyof DraftConfig;
  readonly flag: string;
  readonly env: string;
  readonly fallback: string;
  readonly help: string;
}

/** Every setting with its flag, environment variable and default (the defaults run the local stack's draft). */
export const DRAFT_SETTINGS: readonly Setting[] = [
  { key: "host", flag: "host", env: "SPECGATE_DRAFT_HOST", fallback: "127.0.0.1", help: "address to listen on" },
  { key: "port", flag: "port", env: "SPECGATE_DRAFT_PORT", fallback: "50052", help: "gRPC port (0: a free one)" },
  {
    key: "modelsDir",
    flag: "models-dir",
    env: "SPECGATE_MODELS_DIR",
    fallback: MODELS_ROOT,
    help: "where model names are looked up (npm run models builds them there)",
  },
  {
    key: "drafters",
    flag: "drafters",
    env: "SPECGATE_DRAFTERS",
    fallback: "int4=stories260k-int4,early-exit=stories260k-exit4,ngram",
    help: "drafters served, comma-separated: NAME=MODEL (a model drafter over models/MODEL or a path) or NAME=ngram",
  },
  {
    key: "cacheBytes",
    flag: "cache-bytes",
    env: "SPECGATE_DRAFT_CACHE_BYTES",
    fallback: String(256 * MIB),
    help: "cap on the draft KV cache bytes of all sequences (least recently used are evicted beyond it)",
  },
  {
    key: "executionProvider",
    flag: "execution-provider",
    env: "SPECGATE_EXECUTION_PROVIDER",
    fallback: "cpu",
    help: "ONNX Runtime execution provider (cpu, cuda, ...)",
  },
  {
    key: "deviceId",
    flag: "device-id",
    env: "SPECGATE_DEVICE_ID",
    fallback: "0",
    help: "device ordinal for GPU execution providers",
  },
  {
    key: "threads",
    flag: "threads",
    env: "SPECGATE_DRAFT_THREADS",
    fallback: "0",
    help: "intra-op threads per model (0: all cores)",
  },
  {
    key: "metricsPort",
    flag: "metrics-port",
    env: "SPECGATE_DRAFT_METRICS_PORT",
    fallback: "9465",
    help: "Prometheus scrape port on 127.0.0.1 (0: a free one; OTEL_SDK_DISABLED=true turns telemetry off)",
  },
  {
    key: "drainMs",
    flag: "drain-ms",
    env: "SPECGATE_DRAIN_MS",
    fallback: "5000",
    help: "on SIGTERM, how long running proposals may take before the server stops",
  },
  { key: "logLevel", flag: "log-level", env: "SPECGATE_LOG_LEVEL", fallback: "info", help: "pino log level" },
];

export function draftUsage(): string {
  const lines = DRAFT_SETTINGS.map(
    (s) => `  --${s.flag.padEnd(20)} ${s.help}\n  ${"".padEnd(22)} env ${s.env}, default ${s.fallback}`,
  );
  return `usage: node --import tsx services/draft/main.ts [options]\n\nThe draft service: proposes draft tokens for many sequences over gRPC.\n\n${lines.join("\n")}\n  --help                 print this help`;
}

/** Reads the configuration ("help" when --help was given); throws a TypeError listing every invalid setting. */
export function loadDraftConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): DraftConfig | "help" {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      ...Object.fromEntries(DRAFT_SETTINGS.map((s) => [s.flag, { type: "string" as const }])),
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  const raw = Object.fromEntries(
    DRAFT_SETTINGS.map((s) => [s.key, (values as Record<string, unknown>)[s.flag] ?? env[s.env] ?? s.fallback]),
  );
  const parsed = draftConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const flags = new Map(DRAFT_SETTINGS.map((s) => [s.key as PropertyKey, `--${s.flag} / ${s.env}`]));
    const problems = parsed.error.issues.map((issue) => `  ${flags.get(issue.path[0]) ?? "?"}: ${issue.message}`);
    throw new TypeError(`invalid draft service configuration:\n${problems.join("\n")}`);
  }
  return parsed.data;
}
