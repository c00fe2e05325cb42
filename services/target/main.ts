/**
 * Target replica process: `node --import tsx services/target/main.ts [--help] [flags]`. SIGTERM or SIGINT drains
 * (stop taking jobs, finish the ones in hand, withdraw the announcement, close) and exits 0.
 */
import { pino } from "pino";
import { loadTargetConfig, targetHelp } from "./config.ts";
import { startTargetReplica } from "./target-replica.ts";

const config = loadTargetConfig(process.argv.slice(2), process.env);
if (config === undefined) {
  process.stdout.write(targetHelp());
  process.exit(0);
}
const log = pino({ level: config.logLevel, base: { service: "target", replica: config.replicaId } });

try {
  const replica = await startTargetReplica(config, log);
  const stop = (signal: NodeJS.Signals) => {
    log.info({ signal }, "draining");
    replica.drain().then(
      () => process.exit(0),
      (error) => {
        log.error({ err: error }, "drain failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
} catch (error) {
  log.fatal({ err: error }, "target replica failed to start");
  process.exit(1);
}
