/**
 * `node --import tsx services/target/main.ts [--help]`: runs one target replica until SIGTERM or SIGINT, then drains
 * (stops taking jobs, completes the ones in hand, withdraws its announcement, closes) and exits 0.
 */
import { pino } from "pino";
import { startTelemetry } from "../telemetry/index.ts";
import { loadTargetConfig, targetHelp } from "./config.ts";
import { startTargetReplica } from "./target-replica.ts";
import { instrumentReplica } from "./telemetry.ts";

/** Beyond the drain's own time (jobs in hand), for closing the server, the queues and the model. */
const DRAIN_MARGIN_MS = 5000;

let loaded: ReturnType<typeof loadTargetConfig>;
try {
  loaded = loadTargetConfig(process.argv.slice(2), process.env);
} catch (error) {
  console.error(`${(error as Error).message}\nrun with --help to see every setting`);
  process.exit(2);
}
if (loaded === undefined) {
  process.stdout.write(targetHelp());
  process.exit(0);
}
const config = loaded;
const log = pino({ name: "target", level: config.logLevel, base: { replica: config.replicaId } });

try {
  const telemetry = await startTelemetry({
    serviceName: "specgate-target",
    // Replica ids are StatefulSet ordinals in Kubernetes; other ids stay out of the resource attributes.
    ...(/^\d+$/.test(config.replicaId) ? { replica: Number(config.replicaId) } : {}),
    metrics: { port: config.metricsPort },
  });
  const replica = await startTargetReplica(config, log);
  instrumentReplica(replica, telemetry.metrics);
  if (telemetry.metricsUrl) log.info({ metrics: telemetry.metricsUrl }, "metrics endpoint");
  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "draining");
    // Closing BullMQ's worker can wait for Redis forever (Redis down): the drain gets its time and a margin, no more.
    setTimeout(() => {
      log.error({ drainMs: config.drainMs }, "drain did not finish; exiting anyway");
      process.exit(1);
    }, config.drainMs + DRAIN_MARGIN_MS).unref();
    try {
      await replica.drain();
      await telemetry.shutdown();
      process.exit(0);
    } catch (error) {
      log.error({ err: error }, "drain failed");
      process.exit(1);
    }
  };
  process.on("SIGTERM", (signal) => void stop(signal));
  process.on("SIGINT", (signal) => void stop(signal));
} catch (error) {
  log.fatal({ err: error }, "target replica failed to start");
  process.exit(1);
}
