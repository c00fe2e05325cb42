/**
 * `node --import tsx services/draft/main.ts [--help]`: runs the draft service until SIGTERM or SIGINT, then drains
 * (running proposals are answered, sessions end with UNAVAILABLE) and exits 0.
 */
import { pino } from "pino";
import { runService } from "../lifecycle/run-service.ts";
import { draftHelp, draftServerTlsFiles, loadDraftConfig, servedDrafters, verdictRedis } from "./config.ts";
import { loadDrafters } from "./drafters.ts";
import { startDraftServer } from "./server.ts";
import { draftMetricsEvents, instrumentDraftService } from "./telemetry.ts";

await runService({
  name: "draft service",
  load(argv, env) {
    const config = loadDraftConfig(argv, env);
    if (config !== undefined) {
      verdictRedis(config);
      draftServerTlsFiles(config);
    }
    return config;
  },
  help: draftHelp,
  logger: (config) => pino({ name: "draft", level: config.logLevel }),
  telemetry: () => ({ serviceName: "specgate-draft" }),
  async start(config, logger, telemetry) {
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
      redis: verdictRedis(config),
      events: draftMetricsEvents(telemetry.metrics),
      tls: draftServerTlsFiles(config),
    });
    instrumentDraftService(server.service, telemetry.metrics);
    return {
      ready: {
        message: "draft service listening",
        fields: {
          address: server.address,
          transport:
            config.tlsCert === undefined ? "plaintext" : config.tlsClientCa === undefined ? "tls" : "mutual-tls",
          drafters: config.drafters,
          cacheBytes: config.cacheBytes,
          draftOnVerdict: config.draftOnVerdict,
          metrics: telemetry.metricsUrl,
        },
      },
      stop: () => server.stop(config.drainMs),
    };
  },
});
