/**
 * `node --import tsx gateway/main.ts [--help]`: runs the gateway until SIGTERM or SIGINT, then drains (no new
 * requests, in-flight ones finish within --drain-ms) and exits 0.
 */
import { pino } from "pino";
import { runService } from "../services/lifecycle/run-service.ts";
import { gatewayHelp, loadGatewayConfig } from "./config.ts";
import { loadServedModel } from "./served-model.ts";
import { startGateway } from "./server.ts";

await runService({
  name: "gateway",
  load: loadGatewayConfig,
  help: gatewayHelp,
  logger: (config) => pino({ name: "gateway", level: config.logLevel }),
  telemetry: () => ({ serviceName: "specgate-gateway" }),
  async start(config, logger, telemetry) {
    const { model, tokenizer } = await loadServedModel(config.model);
    const gateway = await startGateway({ config, model, tokenizer, logger, metrics: telemetry.metrics });
    return {
      ready: {
        message: "gateway listening",
        fields: {
          address: gateway.address,
          transport: gateway.transport,
          apiKeys: gateway.apiKeys ?? "off",
          model: model.name,
          draft: config.draftAddress,
          metrics: telemetry.metricsUrl,
        },
      },
      draining: () => ({ inFlight: gateway.admission.inFlight }),
      stop: () => gateway.stop(config.drainMs),
    };
  },
});
