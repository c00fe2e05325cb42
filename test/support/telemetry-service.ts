/**
 * A stand-in service process for telemetry integration tests: starts telemetry from its environment exactly as the
 * services do, records one scripted request (gateway) or one verify batch (draft, target), prints one JSON line with
 * its scrape URL and trace id, and shuts telemetry down (flushing exporters) when its stdin closes.
 *
 * Usage: node --import tsx test/support/telemetry-service.ts <specgate-gateway|specgate-draft|specgate-target>
 */
import { trace } from "@opentelemetry/api";
import { injectIntoCarrier } from "../../services/telemetry/propagation.ts";
import { startRequestTrace } from "../../services/telemetry/request-trace.ts";
import { type ServiceName, startTelemetry } from "../../services/telemetry/start.ts";
import { startVerifyBatch } from "../../services/telemetry/verify-trace.ts";
import { LABELS, SCRIPT, scriptedRequest, scriptedRound } from "./telemetry-fixtures.ts";

const serviceName = process.argv[2] as ServiceName;
const telemetry = await startTelemetry({ serviceName, metrics: { port: Number(process.env.METRICS_PORT ?? 0) } });

let traceId = "";
if (serviceName === "specgate-gateway") {
  const request = startRequestTrace({
    transport: { protocol: "grpc", method: "specgate.v1.Gateway/Generate" },
    labels: LABELS,
    metrics: telemetry.metrics,
  });
  traceId = trace.getSpan(request.context)?.spanContext().traceId ?? "";
  for (let i = 0; i < SCRIPT.length; i++) {
    const round = request.startRound();
    const batch = startVerifyBatch({
      replica: "0",
      jobs: [{ trace: injectIntoCarrier(round.context), enqueuedAtMs: Date.now() - 2 }],
      metrics: telemetry.metrics,
    });
    batch.end([{ proposed: SCRIPT[i][1], accepted: SCRIPT[i][2] }]);
    round.end(scriptedRound(i));
  }
  request.end(scriptedRequest());
} else {
  startVerifyBatch({ replica: "0", jobs: [{ enqueuedAtMs: Date.now() }], metrics: telemetry.metrics }).end();
}

process.stdout.write(`${JSON.stringify({ metricsUrl: telemetry.metricsUrl, tracing: telemetry.tracing, traceId })}\n`);
process.stdin.resume();
process.stdin.on("end", async () => {
  await telemetry.shutdown();
  process.exit(0);
});
