/**
 * `node --import tsx services/draft/main.ts [--help]`: runs the draft service until SIGTERM or SIGINT, then drains
 * (running proposals are answered, sessions end with UNAVAILABLE) and exits 0.
 */
import { pino } from "pino";
import { startTelemetry } from "../telemetry/index.ts";
import { draftHelp, loadDraftConfig, servedDrafters, verdictRedisUrl } from "./config.ts";
import { loadDrafters } from "./drafters.ts";
import { startDraftServer } from "./server.ts";
import { draftMetricsEvents, instrumentDraftService } from "./telemetry.ts";

let loaded: ReturnType<typeof loadDraftConfig>;
let redisUrl: string | undefined;
try {
  loaded = loadDraftConfig(process.argv.slice(2), process.env);
  if (loaded !== undefined) redisUrl = verdictRedisUrl(loaded);
} catch (error) {
  console.error(`${(error as Error).message}\nrun with --help to see every setting`);
  process.exit(2);
}
if (loaded === undefined) {
  process.stdout.write(draftHelp());
  process.exit(0);
}
const config = loaded;
const logger = pino({ name: "draft", level: config.logLevel });
const telemetry = await startTelemetry({ serviceName: "specgate-draft", metrics: { port: config.metricsPort } });
const drafters = await loadDrafters(servedDrafters(config), {
  modelsDir: config.modelsDir,
  runtime: {
    executionProvider: config.executionProvider,
    deviceId: config.deviceId,
    intraOpThreads: config.intraOpThreads,
    threadSpinning: config.threadSpinning,
  },
});
const server = await startDraftServer({
  host: config.host,
  port: config.port,
  drafters,
  capacityBytes: config.cacheBytes,
  logger,
  redisUrl,
  events: draftMetricsEvents(telemetry.metrics),
});
instrumentDraftService(server.service, telemetry.metrics);
logger.info(
  {
    address: server.address,
    drafters: config.drafters,
    cacheBytes: config.cacheBytes,
    draftOnVerdict: config.draftOnVerdict,
    metrics: telemetry.metricsUrl,
  },
  "draft service listening",
);

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, "draining");
  await server.stop(config.drainMs);
  await telemetry.shutdown();
  logger.info("stopped");
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
