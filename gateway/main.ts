/**
 * `node --import tsx gateway/main.ts [--help]`: runs the gateway until SIGTERM or SIGINT, then drains (no new
 * requests, in-flight ones finish within --drain-ms) and exits 0.
 */
import { pino } from "pino";
import { startTelemetry } from "../services/telemetry/index.ts";
import { type GatewayConfig, gatewayHelp, loadGatewayConfig } from "./config.ts";
import { loadServedModel } from "./served-model.ts";
import { startGateway } from "./server.ts";

let loaded: GatewayConfig | undefined;
try {
  loaded = loadGatewayConfig(process.argv.slice(2), process.env);
} catch (error) {
  console.error(`${(error as Error).message}\nrun with --help to see every setting`);
  process.exit(2);
}
if (loaded === undefined) {
  process.stdout.write(gatewayHelp());
  process.exit(0);
}
const config = loaded;
const logger = pino({ name: "gateway", level: config.logLevel });
const telemetry = await startTelemetry({ serviceName: "specgate-gateway", metrics: { port: config.metricsPort } });
const { model, tokenizer } = await loadServedModel(config.model);
// Unreadable certificates or keys files end the process with their message rather than a stack trace.
const gateway = await startGateway({ config, model, tokenizer, logger, metrics: telemetry.metrics }).catch(
  (error: Error) => {
    logger.fatal(error.message);
    process.exit(1);
  },
);
logger.info(
  {
    address: gateway.address,
    transport: gateway.transport,
    apiKeys: gateway.apiKeys ?? "off",
    model: model.name,
    draft: config.draftAddress,
    metrics: telemetry.metricsUrl,
  },
  "gateway listening",
);

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal, inFlight: gateway.admission.inFlight }, "draining");
  await gateway.stop(config.drainMs);
  await telemetry.shutdown();
  logger.info("stopped");
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
