/**
 * How a service runs as a process, the same for the gateway, the draft service and a target replica: settings from
 * flags over environment variables (`--help` prints them and exits 0, an invalid one exits 2), telemetry, the service
 * started and a line once it serves; then on SIGTERM or SIGINT a drain, telemetry flushed, and exit 0 (1 when the
 * drain fails or overruns).
 */
import type { Logger } from "pino";
import { startTelemetry, type Telemetry, type TelemetryOptions } from "../telemetry/index.ts";

/**
 * Beyond the drain's own time, for closing servers, queues, connections and models. A drain can hang on a dependency
 * (closing BullMQ's worker waits for Redis forever while Redis is down): it gets its time and this margin, no more.
 */
export const DRAIN_MARGIN_MS = 5000;

/** The settings every service has that its run reads. */
export interface ServiceConfig {
  readonly drainMs: number;
  readonly metricsPort: number;
}

export interface ServiceDefinition<C extends ServiceConfig> {
  /** "gateway", "draft service", "target replica": names the service in the start-up failure. */
  readonly name: string;
  /** The configuration, or undefined when `--help` was asked for; throws on an invalid setting. */
  load(argv: readonly string[], env: NodeJS.ProcessEnv): C | undefined;
  help(): string;
  logger(config: C): Logger;
  /** Telemetry resource of the service; the metrics port is the configuration's. */
  telemetry(config: C): Omit<TelemetryOptions, "metrics">;
  /** Starts the service; resolves once it serves. */
  start(config: C, logger: Logger, telemetry: Telemetry): Promise<RunningService>;
}

export interface RunningService {
  /** The line logged once the service serves (none: the service logs its own). */
  readonly ready?: { readonly message: string; readonly fields: Record<string, unknown> };
  /** What the "draining" line reports besides the signal. */
  draining?(): Record<string, unknown>;
  /** Drains within the configured drain time, then closes everything the service holds. */
  stop(): Promise<void>;
}

/** Runs the service: resolves once it serves; SIGTERM or SIGINT then drains it and ends the process. */
export async function runService<C extends ServiceConfig>(service: ServiceDefinition<C>): Promise<void> {
  const config = loadOrExit(service);
  const logger = service.logger(config);
  let running: RunningService;
  let telemetry: Telemetry;
  try {
    telemetry = await startTelemetry({ ...service.telemetry(config), metrics: { port: config.metricsPort } });
    running = await service.start(config, logger, telemetry);
  } catch (error) {
    logger.fatal({ err: error }, `${service.name} failed to start: ${(error as Error).message}`);
    process.exit(1);
  }
  if (running.ready) logger.info(running.ready.fields, running.ready.message);

  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, ...running.draining?.() }, "draining");
    setTimeout(() => {
      logger.error({ drainMs: config.drainMs }, "drain did not finish; exiting anyway");
      process.exit(1);
    }, config.drainMs + DRAIN_MARGIN_MS).unref();
    try {
      await running.stop();
      await telemetry.shutdown();
    } catch (error) {
      logger.error({ err: error }, "drain failed");
      process.exit(1);
    }
    logger.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", (signal) => void stop(signal));
  process.on("SIGINT", (signal) => void stop(signal));
}

function loadOrExit<C extends ServiceConfig>(service: ServiceDefinition<C>): C {
  let config: C | undefined;
  try {
    config = service.load(process.argv.slice(2), process.env);
  } catch (error) {
    console.error(`${(error as Error).message}\nrun with --help to see every setting`);
    process.exit(2);
  }
  if (config === undefined) {
    process.stdout.write(service.help());
    process.exit(0);
  }
  return config;
}
