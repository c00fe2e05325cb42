/**
 * `node --import tsx services/target/main.ts [--help]`: runs one target replica until SIGTERM or SIGINT, then drains
 * (stops taking jobs, completes the ones in hand, withdraws its announcement, closes) and exits 0.
 */
import { pino } from "pino";
import { runService } from "../lifecycle/run-service.ts";
import { loadTargetConfig, targetHelp } from "./config.ts";
import { startTargetReplica } from "./target-replica.ts";
import { instrumentReplica } from "./telemetry.ts";

await runService({
  name: "target replica",
  load: loadTargetConfig,
  help: targetHelp,
  logger: (config) => pino({ name: "target", level: config.logLevel, base: { replica: config.replicaId } }),
  telemetry: (config) => ({
    serviceName: "specgate-target",
    // Replica ids are StatefulSet ordinals in Kubernetes; other ids stay out of the resource attributes.
    ...(/^\d+$/.test(config.replicaId) ? { replica: Number(config.replicaId) } : {}),
  }),
  async start(config, logger, telemetry) {
    const replica = await startTargetReplica(config, logger);
    instrumentReplica(replica, telemetry.metrics);
    return {
      // The replica logs "target replica serving" itself; the endpoint is the process's.
      ready: telemetry.metricsUrl
        ? { message: "metrics endpoint", fields: { metrics: telemetry.metricsUrl } }
        : undefined,
      stop: () => replica.drain(),
    };
  },
});
