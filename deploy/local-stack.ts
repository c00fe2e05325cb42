/**
 * The whole specgate stack on this machine: builds the models it needs if they are missing, starts a private
 * redis-server (unless REDIS_URL names one), one draft service, N target replicas and the gateway as child processes
 * with prefixed logs, waits until each serves (grpc.health.v1), restarts a service that crashes afterwards (with
 * backoff, until it crashes too often: restart-policy.ts), and stops them in order.
 *
 * `startLocalStack(options)` is the API (tests, benchmarks); `run(argv)` is the command behind `npm start` (this file
 * run directly), which prints the addresses, an example command and `ready`, then runs until Ctrl-C or SIGTERM.
 * Children are configured through the environment variables their own settings tables declare (imported here, so a
 * renamed variable is a compile error, not a silently ignored setting).
 */
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import type { ChannelCredentials } from "@grpc/grpc-js";
import { z } from "zod";
import { GATEWAY_SETTINGS, type GatewayConfig } from "../gateway/config.ts";
import { parseDrafterSpecs } from "../services/config/drafter-list.ts";
import {
  type ConfigOf,
  integer,
  loadConfig,
  port,
  type Setting,
  type Settings,
  settingsHelp,
} from "../services/config/settings.ts";
import { LOG_LEVEL_SETTING, REDIS_URL_SETTING, TARGET_MODEL_SETTING } from "../services/config/shared-settings.ts";
import { DRAFT_SETTINGS } from "../services/draft/config.ts";
import { RECIPES } from "../services/model-builder/models-build.ts";
import { MODELS_ROOT, resolveModel } from "../services/runtime/model-files.ts";
import { TARGET_SETTINGS } from "../services/target/config.ts";
import { telemetryPlan } from "../services/telemetry/telemetry-plan.ts";
import { freePort } from "./free-port.ts";
import { probeCredentials, waitUntilServing } from "./health.ts";
import { startRedis } from "./redis-server.ts";
import { DEFAULT_RESTART_POLICY, type RestartPolicy } from "./restart-policy.ts";
import { describeExit, PROJECT_ROOT, type ServiceProcess } from "./service-process.ts";
import { StackProcesses } from "./stack-processes.ts";
import { SupervisedService } from "./supervised-service.ts";

/** Target model and drafters that belong together. */
export const MODEL_PAIRS = {
  /** The real stories260K with its int4 and early-exit drafts: the example prints a real story. */
  stories260k: {
    targetModel: "stories260k",
    drafters: "int4=stories260k-int4,early-exit=stories260k-exit4,ngram,lookahead",
    defaultDrafter: "int4",
  },
  /** The cost-scaled target (~110M parameters of work per token) with drafts scaled alike (benchmarks). */
  "cost-scaled": {
    targetModel: "stories260k-x110m",
    drafters: "int4=stories260k-int4-x11m,early-exit=stories260k-x110m-exit3,ngram,lookahead",
    defaultDrafter: "int4",
  },
  /** stories260K with Medusa heads, trained at the first start (`npm run train:medusa`), beside the other drafters. */
  medusa: {
    targetModel: "stories260k-medusa",
    drafters: "medusa,lookahead,int4=stories260k-int4,ngram",
    defaultDrafter: "medusa",
  },
} as const;

export type ModelPair = keyof typeof MODEL_PAIRS;

export interface LocalStackOptions {
  /** Default "stories260k". `targetModel`, `drafters` and `defaultDrafter` override its parts. */
  readonly pair?: ModelPair;
  readonly targetModel?: string;
  /** NAME=MODEL or NAME=ngram, comma-separated (SPECGATE_DRAFTERS syntax). */
  readonly drafters?: string;
  readonly defaultDrafter?: string;
  /** Target replicas (default 1). */
  readonly replicas?: number;
  /** Gateway port on 127.0.0.1 (default $SPECGATE_PORT, else 50051; 0: a free one). */
  readonly gatewayPort?: number;
  /**
   * The gateway's HTTP API port on 127.0.0.1 (default $SPECGATE_HTTP_PORT, else 8000, but a free one when gatewayPort
   * is 0; 0: a free one; "off": no HTTP API).
   */
  readonly httpPort?: number | "off";
  /** "default": gateway 9464, draft 9465, target r 9466 + r. "free": free ports (tests, several stacks at once). */
  readonly metricsPorts?: "default" | "free";
  /** A running Redis (default $REDIS_URL); without one the stack starts its own redis-server. */
  readonly redisUrl?: string;
  /** Log level of the services (default "info"). */
  readonly logLevel?: string;
  /** Where the services' prefixed log lines and the stack's progress go (default: stderr). */
  readonly log?: (line: string) => void;
  /** Longest wait for one service to serve, ms (default 180 s: the cost-scaled models take a while to load). */
  readonly startTimeoutMs?: number;
  /** Environment the services inherit (default process.env); the stack's own settings override it. */
  readonly env?: NodeJS.ProcessEnv;
  /** Gateway TLS, API keys and admission limits, handed to the gateway as they are (default: from `env`). */
  readonly gateway?: Partial<Pick<GatewayConfig, GatewayPassThrough>>;
  /** The draft service drafts each round on the replica's verdict (default: SPECGATE_DRAFT_ON_VERDICT in `env`). */
  readonly draftOnVerdict?: boolean;
  /** When a service that crashes after start-up is left down and the stack fails (default: 5 crashes in 60 s). */
  readonly restartPolicy?: RestartPolicy;
}

/** Gateway settings the stack passes through without interpreting them. */
type GatewayPassThrough =
  | "tlsCert"
  | "tlsKey"
  | "apiKeysFile"
  | "apiKeys"
  | "maxInFlight"
  | "maxInFlightPerTenant"
  | "maxQueued"
  | "maxQueueMs"
  | "kvBudgetBytes";

export interface StackService {
  /** "draft", "target-0", ..., "gateway". */
  readonly name: string;
  /** Its process running now (another one after a restart). */
  readonly pid: number;
  /** gRPC host:port. */
  readonly address: string;
  /** Prometheus scrape URL, when the service has a metrics port setting. */
  readonly metricsUrl?: string;
}

export interface LocalStack {
  readonly gatewayAddress: string;
  /** Base URL of the gateway's OpenAI-compatible HTTP API (undefined: off). */
  readonly httpUrl: string | undefined;
  /** The gateway serves TLS / requires API keys (clients need --tls-ca / --api-key). */
  readonly gatewayTls: boolean;
  readonly gatewayApiKeys: boolean;
  readonly redisUrl: string;
  /** True when the stack started redis-server itself (and stops it). */
  readonly ownRedis: boolean;
  readonly targetModel: string;
  readonly drafters: string;
  readonly defaultDrafter: string;
  /** Draft service, target replicas, gateway, in start order. */
  readonly services: readonly StackService[];
  /** Every process of the stack running now (services, and redis-server when it started one). */
  readonly pids: readonly number[];
  /**
   * Resolves with an error naming the service and its last lines once a service crashed too often to be restarted
   * (never resolves otherwise); each restart before that is logged.
   */
  readonly failure: Promise<Error>;
  /** Stops the gateway (draining its requests), then the draft service and the replicas, then redis; idempotent. */
  stop(): Promise<void>;
}

/** Start-up failed; every process the stack had started (listed here) has been stopped. */
export class LocalStackStartError extends Error {
  override readonly name = "LocalStackStartError";
  constructor(
    message: string,
    readonly pids: readonly number[],
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

const DEFAULT_GATEWAY_PORT = 50051;
const DEFAULT_HTTP_PORT = 8000;
const METRICS_PORT = { gateway: 9464, draft: 9465, target: 9466 } as const;
/** Each service's own drain limit, below the time the stack gives it before killing it (stack-processes.ts). */
const SERVICE_DRAIN_MS = 5_000;

/** What every service of the stack is told the same way. */
const SHARED_SETTINGS = {
  logLevel: LOG_LEVEL_SETTING,
  redisUrl: REDIS_URL_SETTING,
  model: TARGET_MODEL_SETTING,
} satisfies Settings;

/** The settings the stack gives each service it starts. */
type ServiceSettings = Settings & Record<"host" | "port" | "drainMs" | "metricsPort", Setting>;

/** Environment variables for a service from its own settings table: { key: value } → { ENV_NAME: "value" }. */
function envOf<S extends Settings>(settings: S, values: { [K in keyof S]?: string | number }): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined) env[settings[key].env] = String(value);
  }
  return env;
}

/** Fails fast when a gateway port is taken: a health check would otherwise be answered by whoever holds it. */
async function ensurePortFree(port: number, setting: { env: string; flag: string }): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const probe = createServer();
    probe.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        new Error(
          error.code === "EADDRINUSE"
            ? `port ${port} on 127.0.0.1 is in use (another stack running?); choose another with ${setting.env} or --${setting.flag}`
            : `cannot listen on 127.0.0.1:${port}: ${error.message}`,
        ),
      ),
    );
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve()));
  });
}

/** Builds the named models that are missing (`npm run models -- --only ...`), streaming the builder's progress. */
async function ensureModels(names: readonly string[], log: (line: string) => void): Promise<void> {
  const missing = [...new Set(names)].filter((name) => {
    try {
      resolveModel(name);
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length === 0) return;
  const unknown = missing.filter((name) => !RECIPES.some((recipe) => recipe.name === name));
  if (unknown.length > 0) {
    throw new Error(
      `model ${unknown.join(", ")} not found (looked in ${MODELS_ROOT} and as a path), and npm run models does not ` +
        `build it; it builds: ${RECIPES.map((r) => r.name).join(", ")}`,
    );
  }
  log(`[stack] building missing models: ${missing.join(", ")}`);
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "services/model-builder/models-cli.ts", ...missing.flatMap((name) => ["--only", name])],
    { cwd: PROJECT_ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) =>
      log(`[models] ${line}`),
    );
  }
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", resolve);
  });
  if (code !== 0) throw new Error(`building the models failed (npm run models exited with code ${code})`);
}

/** Resolves once the service serves; rejects with its last lines if it exits first. */
async function waitForService(
  service: ServiceProcess,
  address: string,
  timeoutMs: number,
  credentials?: ChannelCredentials,
): Promise<void> {
  const died = new AbortController();
  void service.exited.then(() => died.abort());
  try {
    await waitUntilServing(address, timeoutMs, died.signal, credentials);
  } catch (error) {
    if (!died.signal.aborted) throw new Error(`${service.name} (${address}): ${(error as Error).message}`);
    const exit = await service.exited;
    const lines = service.recentLines().map((line) => `    ${line}`);
    throw new Error(
      `${service.name} ${describeExit(exit)} during start-up${lines.length > 0 ? `; its last lines:\n${lines.join("\n")}` : ""}`,
    );
  }
}

/** The stack the options ask for, with the defaults filled in. */
interface StackPlan {
  readonly log: (line: string) => void;
  /** What the services inherit. */
  readonly env: NodeJS.ProcessEnv;
  readonly targetModel: string;
  readonly drafters: string;
  readonly defaultDrafter: string;
  readonly replicas: number;
  readonly gatewayPort: number;
  readonly httpPort: number | "off";
  /** A running Redis to use; undefined: the stack starts its own. */
  readonly redisUrl: string | undefined;
  readonly freeMetricsPorts: boolean;
  readonly logLevel: string;
  readonly timeoutMs: number;
  readonly gateway: LocalStackOptions["gateway"];
  readonly draftOnVerdict: boolean | undefined;
  readonly restartPolicy: RestartPolicy;
}

function stackPlan(options: LocalStackOptions): StackPlan {
  const env = options.env ?? process.env;
  const pair = MODEL_PAIRS[options.pair ?? "stories260k"];
  const replicas = options.replicas ?? 1;
  if (!(Number.isInteger(replicas) && replicas >= 1)) throw new RangeError(`replicas must be >= 1, got ${replicas}`);
  const gatewayPort = options.gatewayPort ?? (env.SPECGATE_PORT ? Number(env.SPECGATE_PORT) : DEFAULT_GATEWAY_PORT);
  return {
    log: options.log ?? ((line: string) => process.stderr.write(`${line}\n`)),
    env,
    targetModel: options.targetModel ?? pair.targetModel,
    drafters: options.drafters ?? pair.drafters,
    defaultDrafter: options.defaultDrafter ?? pair.defaultDrafter,
    replicas,
    gatewayPort,
    httpPort:
      options.httpPort ??
      (env[GATEWAY_SETTINGS.httpPort.env]
        ? GATEWAY_SETTINGS.httpPort.schema.parse(env[GATEWAY_SETTINGS.httpPort.env])
        : gatewayPort === 0
          ? 0
          : DEFAULT_HTTP_PORT),
    redisUrl: options.redisUrl ?? env.REDIS_URL,
    freeMetricsPorts: options.metricsPorts === "free",
    logLevel: options.logLevel ?? "info",
    timeoutMs: options.startTimeoutMs ?? 180_000,
    gateway: options.gateway,
    draftOnVerdict: options.draftOnVerdict,
    restartPolicy: options.restartPolicy ?? DEFAULT_RESTART_POLICY,
  };
}

/**
 * What can fail before any process starts, checked first so that nothing has to be stopped: the drafter list, mutual
 * TLS (the readiness probe has no client certificate to present), the models (built when missing), the gateway's
 * ports. Resolves with the ports the gateway will bind.
 */
async function prepare(plan: StackPlan): Promise<{ grpc: number; http: number | "off" }> {
  const specs = parseDrafterSpecs(plan.drafters);
  if (plan.env[GATEWAY_SETTINGS.tlsClientCa.env]) {
    throw new Error(
      `the local stack cannot health-check a gateway that requires client certificates ($${GATEWAY_SETTINGS.tlsClientCa.env}); run gateway/main.ts on its own for mutual TLS`,
    );
  }
  await ensureModels([plan.targetModel, ...specs.flatMap((s) => (s.kind === "model" ? [s.model] : []))], plan.log);
  const grpc = plan.gatewayPort === 0 ? await freePort() : plan.gatewayPort;
  await ensurePortFree(grpc, GATEWAY_SETTINGS.port);
  const http = plan.httpPort === 0 ? await freePort() : plan.httpPort;
  if (http !== "off") await ensurePortFree(http, GATEWAY_SETTINGS.httpPort);
  return { grpc, http };
}

/** The Redis the services share: the one the plan names, else a redis-server the stack starts (and stops). */
async function stackRedis(plan: StackPlan, processes: StackProcesses): Promise<string> {
  if (plan.redisUrl !== undefined) return plan.redisUrl;
  if (plan.env.REDIS_CLUSTER === "true") {
    throw new Error(
      "REDIS_CLUSTER=true needs REDIS_URL naming a node of the cluster: the stack's own Redis is one node",
    );
  }
  const redis = await startRedis({
    detached: true,
    output: (text) => {
      for (const line of text.split("\n")) if (line.trim()) plan.log(`[redis] ${line}`);
    },
  });
  processes.redis = redis;
  return redis.url;
}

/** One service to start on 127.0.0.1:`port`: its entry point and the settings particular to it. */
interface ServiceLaunch<S extends ServiceSettings> {
  readonly name: string;
  readonly entry: string;
  readonly settings: S;
  readonly values: { [K in keyof S]?: string | number };
  readonly port: number;
  /** Its metrics port unless the plan asks for free ones. */
  readonly metricsPort: number;
  /** It serves TLS when its environment names a certificate (the gateway); the others serve loopback plaintext. */
  readonly tlsFromEnv?: boolean;
}

interface Launched {
  readonly service: SupervisedService;
  readonly address: string;
  readonly env: NodeJS.ProcessEnv;
  /** Resolves once the process serves (rejects if it dies first). */
  readonly serving: (process: ServiceProcess) => Promise<void>;
}

/** Starts the services, each with what they share and its own settings, and lists them for the stack's banner. */
class ServiceLauncher {
  readonly services: StackService[] = [];

  constructor(
    private readonly plan: StackPlan,
    private readonly processes: StackProcesses,
    private readonly redisUrl: string,
  ) {}

  /** Resolves once the process runs (it serves later: waitForService). */
  async launch<S extends ServiceSettings>(launch: ServiceLaunch<S>): Promise<Launched> {
    const { plan } = this;
    const metricsPort = plan.freeMetricsPorts ? await freePort() : launch.metricsPort;
    const env: NodeJS.ProcessEnv = {
      ...plan.env,
      ...envOf(SHARED_SETTINGS, { logLevel: plan.logLevel, redisUrl: this.redisUrl, model: plan.targetModel }),
      ...envOf(launch.settings, launch.values),
      ...envOf<ServiceSettings>(launch.settings, {
        host: "127.0.0.1",
        port: launch.port,
        drainMs: SERVICE_DRAIN_MS,
        metricsPort,
      }),
    };
    const address = `127.0.0.1:${launch.port}`;
    const credentials = launch.tlsFromEnv ? probeCredentials(env) : undefined;
    const serving = (process: ServiceProcess) => waitForService(process, address, plan.timeoutMs, credentials);
    const service = await SupervisedService.start(
      { name: launch.name, entry: launch.entry, env },
      plan.log,
      plan.restartPolicy,
      serving,
    );
    this.processes.add(service);
    this.services.push({
      name: launch.name,
      get pid() {
        return service.process.pid;
      },
      address,
      metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
    });
    return { service, address, env, serving };
  }
}

export async function startLocalStack(options: LocalStackOptions = {}): Promise<LocalStack> {
  const plan = stackPlan(options);
  const ports = await prepare(plan);
  const processes = new StackProcesses();
  try {
    const redisUrl = await stackRedis(plan, processes);
    const launcher = new ServiceLauncher(plan, processes, redisUrl);
    const draft = await launcher.launch({
      name: "draft",
      entry: "services/draft/main.ts",
      settings: DRAFT_SETTINGS,
      values: {
        drafters: plan.drafters,
        intraOpThreads: 1,
        draftOnVerdict: plan.draftOnVerdict === undefined ? undefined : String(plan.draftOnVerdict),
      },
      port: await freePort(),
      metricsPort: METRICS_PORT.draft,
    });
    const targets: Launched[] = [];
    for (let r = 0; r < plan.replicas; r++) {
      targets.push(
        await launcher.launch({
          name: `target-${r}`,
          entry: "services/target/main.ts",
          settings: TARGET_SETTINGS,
          values: { replicaId: `target-${r}` },
          port: await freePort(),
          metricsPort: METRICS_PORT.target + r,
        }),
      );
    }
    await Promise.all([draft, ...targets].map((s) => s.serving(s.service.process)));

    const gateway = await launcher.launch({
      name: "gateway",
      entry: "gateway/main.ts",
      settings: GATEWAY_SETTINGS,
      values: {
        ...plan.gateway,
        draftAddress: draft.address,
        drafters: plan.drafters,
        defaultDrafter: plan.defaultDrafter,
        httpPort: ports.http,
      },
      port: ports.grpc,
      metricsPort: METRICS_PORT.gateway,
      tlsFromEnv: true,
    });
    await gateway.serving(gateway.service.process);
    processes.supervise();

    const gatewayTls = Boolean(gateway.env[GATEWAY_SETTINGS.tlsCert.env]);
    return {
      gatewayAddress: gateway.address,
      httpUrl: ports.http === "off" ? undefined : `${gatewayTls ? "https" : "http"}://127.0.0.1:${ports.http}/v1`,
      gatewayTls,
      gatewayApiKeys: Boolean(
        gateway.env[GATEWAY_SETTINGS.apiKeysFile.env] || gateway.env[GATEWAY_SETTINGS.apiKeys.env],
      ),
      redisUrl,
      ownRedis: processes.ownRedis,
      targetModel: plan.targetModel,
      drafters: plan.drafters,
      defaultDrafter: plan.defaultDrafter,
      services: launcher.services,
      get pids() {
        return processes.pids;
      },
      failure: processes.failure(),
      stop: () => processes.stop(),
    };
  } catch (error) {
    const { pids } = processes;
    await processes.stop();
    throw new LocalStackStartError((error as Error).message, pids, { cause: error });
  }
}

const STACK_SETTINGS = {
  pair: {
    flag: "pair",
    env: "SPECGATE_PAIR",
    schema: z.enum(Object.keys(MODEL_PAIRS) as [ModelPair, ...ModelPair[]]).default("stories260k"),
    help: `target model and drafters: ${Object.entries(MODEL_PAIRS)
      .map(([name, pair]) => `${name} (${pair.targetModel} with ${pair.drafters})`)
      .join(", ")}`,
  },
  targetModel: {
    flag: "target-model",
    env: GATEWAY_SETTINGS.model.env,
    schema: z.string().min(1).optional(),
    help: "target model instead of the pair's",
  },
  drafters: {
    flag: "drafters",
    env: GATEWAY_SETTINGS.drafters.env,
    schema: z.string().min(1).optional(),
    help: "drafters instead of the pair's (NAME=MODEL or NAME=ngram, comma-separated)",
  },
  defaultDrafter: {
    flag: "default-drafter",
    env: GATEWAY_SETTINGS.defaultDrafter.env,
    schema: z.string().min(1).optional(),
    help: "drafter of requests that name none, instead of the pair's",
  },
  replicas: {
    flag: "replicas",
    env: "SPECGATE_REPLICAS",
    schema: integer(1, 1).pipe(z.number().max(64)),
    help: "target replicas",
  },
  port: {
    flag: "port",
    env: GATEWAY_SETTINGS.port.env,
    schema: port(DEFAULT_GATEWAY_PORT),
    help: "gateway port on 127.0.0.1",
  },
  httpPort: { ...GATEWAY_SETTINGS.httpPort, help: 'gateway HTTP API port on 127.0.0.1 ("off": none)' },
  redisUrl: {
    ...REDIS_URL_SETTING,
    schema: z.string().min(1).optional(),
    help: "a running Redis to use (unset: the stack starts its own redis-server on a free port)",
  },
  logLevel: { ...LOG_LEVEL_SETTING, help: "log level of the services" },
  crashLimit: {
    flag: "crash-limit",
    env: "SPECGATE_CRASH_LIMIT",
    schema: integer(1, DEFAULT_RESTART_POLICY.maxCrashes),
    help: "a service that crashes is restarted (with backoff) until it has crashed this often within the crash window; then the stack stops (1: never restart). A drained exit (code 0, after SIGTERM) is restarted but is no crash",
  },
  crashWindowS: {
    flag: "crash-window-s",
    env: "SPECGATE_CRASH_WINDOW_S",
    schema: integer(1, DEFAULT_RESTART_POLICY.windowMs / 1000),
    help: "the crash window, seconds",
  },
  // Passed to the gateway as they are.
  tlsCert: GATEWAY_SETTINGS.tlsCert,
  tlsKey: GATEWAY_SETTINGS.tlsKey,
  apiKeysFile: GATEWAY_SETTINGS.apiKeysFile,
  apiKeys: GATEWAY_SETTINGS.apiKeys,
  maxInFlightPerTenant: GATEWAY_SETTINGS.maxInFlightPerTenant,
} satisfies Settings;

/** A Redis URL fit to print: an ACL user's password (rediss://user:pass@...) is not for the terminal or its logs. */
function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password === "") return url;
    parsed.password = "***";
    return parsed.toString();
  } catch {
    return url;
  }
}

/** The lines `run` prints once the stack serves; `ready` comes last, on a line of its own. */
export function readyBanner(stack: LocalStack): string[] {
  const width = Math.max(...stack.services.map((s) => s.name.length), "redis".length) + 2;
  const row = (name: string, text: string) => `  ${name.padEnd(width)}${text}`;
  // Gateway first: it is what people scrape and look at first.
  const metrics = [...stack.services].reverse().filter((s) => s.metricsUrl);
  const address =
    stack.gatewayAddress === `127.0.0.1:${DEFAULT_GATEWAY_PORT}` ? "" : ` --address ${stack.gatewayAddress}`;
  return [
    `specgate is up: target ${stack.targetModel}, drafters ${parseDrafterSpecs(stack.drafters)
      .map((s) => s.name)
      .join(", ")} (default ${stack.defaultDrafter})`,
    row("gateway", `${stack.gatewayAddress}   <- clients connect here`),
    ...(stack.httpUrl ? [row("http", `${stack.httpUrl}   <- OpenAI-compatible HTTP API`)] : []),
    ...stack.services.filter((s) => s.name !== "gateway").map((s) => row(s.name, s.address)),
    row("redis", `${withoutPassword(stack.redisUrl)}${stack.ownRedis ? " (started by the stack)" : ""}`),
    ...(metrics.length > 0 ? ["Prometheus metrics:", ...metrics.map((s) => row(s.name, s.metricsUrl ?? ""))] : []),
    tracesLine(process.env),
    "Try:",
    `  npx specgate generate "Once upon a time" --max-tokens 64${address}${stack.gatewayTls ? " --tls-ca CA.pem" : ""}${stack.gatewayApiKeys ? " --api-key KEY" : ""}`,
    ...(stack.httpUrl
      ? [
          `  curl ${stack.httpUrl}/completions${stack.gatewayTls ? " --cacert CA.pem" : ""}${stack.gatewayApiKeys ? ' -H "Authorization: Bearer KEY"' : ""} -H "Content-Type: application/json" -d '{"prompt": "Once upon a time", "max_tokens": 64}'`,
        ]
      : []),
    ...(stack.gatewayTls ? ["  (TLS: CA.pem is the CA that signed the gateway's certificate)"] : []),
    ...(stack.gatewayApiKeys
      ? ["  (API keys: KEY is one whose hash the keys file lists; specgate keygen makes one)"]
      : []),
    "A service that crashes is restarted; Ctrl-C stops the stack.",
    "ready",
  ];
}

/** Where the services' traces go, from the OTEL_* variables they inherit (deploy/grafana/README.md has the how-to). */
function tracesLine(env: NodeJS.ProcessEnv): string {
  const exporters = telemetryPlan(env).traceExporters;
  if (exporters.length === 0) {
    return "Traces: off (OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 or OTEL_TRACES_EXPORTER=console turns them on)";
  }
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT || "the default endpoint";
  return `Traces: ${exporters.map((name) => (name === "otlp" ? `OTLP to ${endpoint}` : name)).join(", ")}`;
}

/** `npm start`: runs the stack until SIGINT or SIGTERM; resolves with the exit code. */
export async function run(argv: readonly string[]): Promise<number> {
  let config: ConfigOf<typeof STACK_SETTINGS> | undefined;
  try {
    config = loadConfig(STACK_SETTINGS, argv, process.env, "local stack");
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\nrun with --help to see every setting\n`);
    return 2;
  }
  if (config === undefined) {
    process.stdout.write(
      settingsHelp(
        STACK_SETTINGS,
        "specgate local stack: builds missing models, starts redis-server (unless REDIS_URL is set), the draft service, the target replicas and the gateway; restarts a service that crashes; Ctrl-C stops everything.",
        "npm start -- [flags]",
      ),
    );
    return 0;
  }
  let signalled: (signal: string) => void = () => {};
  const signal = new Promise<string>((resolve) => {
    signalled = resolve;
  });
  const onSignal = (name: NodeJS.Signals) => signalled(name);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    process.stderr.write(`[stack] starting (${config.replicas} target replica${config.replicas > 1 ? "s" : ""})\n`);
    const starting = startLocalStack({
      pair: config.pair,
      targetModel: config.targetModel,
      drafters: config.drafters,
      defaultDrafter: config.defaultDrafter,
      replicas: config.replicas,
      gatewayPort: config.port,
      httpPort: config.httpPort,
      redisUrl: config.redisUrl,
      logLevel: config.logLevel,
      restartPolicy: { maxCrashes: config.crashLimit, windowMs: config.crashWindowS * 1000 },
      gateway: {
        tlsCert: config.tlsCert,
        tlsKey: config.tlsKey,
        apiKeysFile: config.apiKeysFile,
        apiKeys: config.apiKeys,
        maxInFlightPerTenant: config.maxInFlightPerTenant,
      },
    });
    const first = await Promise.race([starting.then((stack) => ({ stack })), signal.then((name) => ({ name }))]);
    if ("name" in first) {
      process.stderr.write(`[stack] ${first.name} during start-up: stopping\n`);
      await starting.then(
        (stack) => stack.stop(),
        () => {},
      );
      return 0;
    }
    const { stack } = first;
    process.stdout.write(`${readyBanner(stack).join("\n")}\n`);
    const outcome = await Promise.race([signal.then((name) => ({ name })), stack.failure.then((error) => ({ error }))]);
    if ("error" in outcome) {
      process.stderr.write(`[stack] ${outcome.error.message}\n[stack] stopping the stack\n`);
      await stack.stop();
      return 1;
    }
    process.stderr.write(`[stack] ${outcome.name}: stopping\n`);
    await stack.stop();
    process.stderr.write("[stack] stopped\n");
    return 0;
  } catch (error) {
    process.stderr.write(`[stack] could not start: ${(error as Error).message}\n`);
    return 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

if (process.argv[1] === import.meta.filename) process.exitCode = await run(process.argv.slice(2));
