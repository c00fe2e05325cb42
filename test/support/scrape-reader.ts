/** A pull reader without a server: collect() on demand, serialised exactly as the scrape endpoint does. */
import { PrometheusSerializer } from "@opentelemetry/exporter-prometheus";
import { MetricReader } from "@opentelemetry/sdk-metrics";
import { parsePrometheusText, type Scrape } from "../../services/telemetry/prometheus-text.ts";

export class ScrapeReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
  async scrape(): Promise<Scrape> {
    const { resourceMetrics } = await this.collect();
    return parsePrometheusText(new PrometheusSerializer("", false, undefined, true, true).serialize(resourceMetrics));
  }
}
