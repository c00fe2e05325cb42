/**
 * `node --import tsx gateway/main.ts [--help]`: runs the gateway (gRPC, and the OpenAI-compatible HTTP API unless
 * --http-port is "off") until SIGTERM or SIGINT, then drains (no new requests, in-flight ones finish within
 * --drain-ms) and exits 0.
 */
import { pino } from "pino";
import { runService } from "../services/lifecycle/run-service.ts";
import { gatewayHelp, gatewayTlsFiles, loadGatewayConfig } from "./config.ts";
import { loadChatTemplate } from "./http/chat-template.ts";
import { type RunningHttpApi, startHttpApi } from "./http/server.ts";
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
    const chatTemplate = config.httpPort === "off" ? undefined : loadChatTemplate(config.model, config.chatTemplate);
    const gateway = await startGateway({ config, model, tokenizer, logger, metrics: telemetry.metrics });
    let http: RunningHttpApi | undefined;
    if (config.httpPort !== "off") {
      try {
        http = await startHttpApi({
          gateway,
          model,
          chatTemplate,
          host: config.host,
          port: config.httpPort,
          tls: gatewayTlsFiles(config),
        });
      } catch (error) {
        await gateway.stop(0);
        throw error;
      }
    }
    return {
      ready: {
        message: "gateway listening",
        fields: {
          address: gateway.address,
          http: http?.url ?? "off",
          transport: gateway.transport,
          apiKeys: gateway.apiKeys ?? "off",
          model: model.name,
          chatTemplate: chatTemplate?.source ?? "none",
          draft: config.draftAddress,
          metrics: telemetry.metricsUrl,
        },
      },
      draining: () => ({ inFlight: gateway.admission.inFlight }),
      async stop() {
        await gateway.stop(config.drainMs);
        await http?.close();
      },
    };
  },
});
