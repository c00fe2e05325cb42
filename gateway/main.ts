/**
 * `node --import tsx gateway/main.ts [--help]`: runs the gateway until SIGTERM or SIGINT, then drains (no new
 * requests, in-flight ones finish within --drain-ms) and exits 0.
 */
import { pino } from "pino";
import { resolveModel } from "../services/runtime/model-files.ts";
import { loadTokenizer } from "../services/runtime/tokenizer/load.ts";
import { startTelemetry } from "../services/telemetry/index.ts";
import { type GatewayConfig, gatewayHelp, loadGatewayConfig } from "./config.ts";
import { type ServedModel, startGateway } from "./server.ts";

function firstId(value: number | number[] | null | undefined): number | undefined {
  return Array.isArray(value) ? value[0] : (value ?? undefined);
}

/** The target model as the gateway needs it: tokenizer, context length, special ids (no ONNX session). */
async function servedModel(config: GatewayConfig) {
  const files = resolveModel(config.model);
  const tokenizer = await loadTokenizer(files.dir);
  const contextLength = files.config.max_position_embeddings ?? files.config.n_positions;
  if (contextLength === undefined) throw new Error(`${files.dir}/config.json gives no context length`);
  const model: ServedModel = {
    name: files.name,
    contextLength,
    vocabSize: tokenizer.vocabSize,
    bosTokenId: firstId(files.config.bos_token_id) ?? tokenizer.bosId,
    eosTokenId: firstId(files.config.eos_token_id) ?? tokenizer.eosId,
  };
  return { model, tokenizer };
}

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
const { model, tokenizer } = await servedModel(config);
const gateway = await startGateway({ config, model, tokenizer, logger, metrics: telemetry.metrics });
logger.info(
  { address: gateway.address, model: model.name, draft: config.draftAddress, metrics: telemetry.metricsUrl },
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
