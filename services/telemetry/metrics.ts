/**
 * Every metric specgate exports: names, units, descriptions and bucket boundaries, and the small typed recording
 * functions the services call. Services never touch instruments directly.
 */
import type { Attributes, Counter, Histogram, Meter, ObservableGauge, ObservableResult } from "@opentelemetry/api";
import {
  METRIC_HTTP_SERVER_REQUEST_DURATION,
  METRIC_RPC_SERVER_CALL_DURATION,
} from "@opentelemetry/semantic-conventions";
import { ATTR, RPC_SYSTEM_GRPC } from "./attributes.ts";
import { type FinishedRequest, type RequestLabels, timePerOutputTokenMs, type VerifiedRound } from "./records.ts";

export type MetricKind = "counter" | "histogram" | "gauge";

export interface MetricDefinition {
  name: string;
  kind: MetricKind;
  unit: string;
  description: string;
  buckets?: number[];
}

const SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const TOKENS_PER_ROUND = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16];
const TOKENS_PER_REQUEST = [1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096];
const BATCH = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64];

/** Speculation counters carry vLLM's `spec_decode_*` names where they count the same thing. */
export const METRICS = {
  drafts: {
    name: "specgate.spec_decode.num_drafts",
    kind: "counter",
    unit: "{round}",
    description:
      "Rounds that verified a draft (a chain or a token tree): mean acceptance length = 1 + accepted / drafts",
  },
  draftTokensProposed: {
    name: "specgate.spec_decode.num_draft_tokens",
    kind: "counter",
    unit: "{token}",
    description: "Draft tokens proposed to the target for verification",
  },
  draftTokensAccepted: {
    name: "specgate.spec_decode.num_accepted_tokens",
    kind: "counter",
    unit: "{token}",
    description: "Draft tokens accepted by the target; divided by proposed this is the acceptance rate alpha",
  },
  positionProposed: {
    name: "specgate.spec_decode.num_draft_tokens_per_pos",
    kind: "counter",
    unit: "{token}",
    description: "Draft tokens proposed at each draft position (attribute specgate.draft.position, 1-based)",
  },
  positionAccepted: {
    name: "specgate.spec_decode.num_accepted_tokens_per_pos",
    kind: "counter",
    unit: "{token}",
    description: "Draft tokens accepted at each draft position (attribute specgate.draft.position, 1-based)",
  },
  roundAccepted: {
    name: "specgate.round.accepted",
    kind: "histogram",
    unit: "{token}",
    description: "Accepted draft tokens per speculation round (acceptance length)",
    buckets: TOKENS_PER_ROUND,
  },
  roundK: {
    name: "specgate.round.k",
    kind: "histogram",
    unit: "{token}",
    description: "Speculation length K chosen per round (0 = plain decoding)",
    buckets: TOKENS_PER_ROUND,
  },
  roundDuration: {
    name: "specgate.round.duration",
    kind: "histogram",
    unit: "s",
    description: "Wall time of one speculation round at the gateway",
    buckets: SECONDS,
  },
  roundPhaseTime: {
    name: "specgate.round.phase.time",
    kind: "counter",
    unit: "s",
    description: "Time rounds spent drafting, waiting in the verify queue and verifying (specgate.round.phase), summed",
  },
  timeToFirstToken: {
    name: "gen_ai.server.time_to_first_token",
    kind: "histogram",
    unit: "s",
    description: "Time from request arrival to the first generated token",
    buckets: SECONDS,
  },
  timePerOutputToken: {
    name: "gen_ai.server.time_per_output_token",
    kind: "histogram",
    unit: "s",
    description: "Time per output token after the first",
    buckets: SECONDS,
  },
  tokenUsage: {
    name: "gen_ai.client.token.usage",
    kind: "histogram",
    unit: "{token}",
    description: "Input and output tokens per request (gen_ai.token.type)",
    buckets: TOKENS_PER_REQUEST,
  },
  requests: {
    name: "specgate.requests",
    kind: "counter",
    unit: "{request}",
    description: "Finished requests by gRPC status and finish reason",
  },
  rpcServerDuration: {
    name: METRIC_RPC_SERVER_CALL_DURATION,
    kind: "histogram",
    unit: "s",
    description: "Duration of incoming gRPC calls",
    buckets: SECONDS,
  },
  httpServerDuration: {
    name: METRIC_HTTP_SERVER_REQUEST_DURATION,
    kind: "histogram",
    unit: "s",
    description: "Duration of incoming HTTP requests (the OpenAI-compatible API's generation requests)",
    // The gRPC calls' buckets rather than HTTP's advice: the same requests, compared on one panel.
    buckets: SECONDS,
  },
  verifyQueueWait: {
    name: "specgate.verify.queue.wait",
    kind: "histogram",
    unit: "s",
    description: "Time a verify job waited in the queue before its batched forward started",
    buckets: SECONDS,
  },
  verifyBatchSize: {
    name: "specgate.verify.batch.size",
    kind: "histogram",
    unit: "{job}",
    description: "Verify jobs served by one batched target forward",
    buckets: BATCH,
  },
  verifyBatchDuration: {
    name: "specgate.verify.batch.duration",
    kind: "histogram",
    unit: "s",
    description: "Time of one batched verify (forward pass, acceptance and cache trim)",
    buckets: SECONDS,
  },
  verifyHistoryNeeded: {
    name: "specgate.verify.history_needed",
    kind: "counter",
    unit: "{round}",
    description:
      "Verify rounds the gateway sent again with the full history because the replica did not hold the prefix claimed",
  },
  verifyQueueDepth: {
    name: "specgate.verify.queue.depth",
    kind: "gauge",
    unit: "{job}",
    description: "Verify jobs waiting for a replica",
  },
  kvCacheUsage: {
    name: "specgate.kv_cache.usage",
    kind: "gauge",
    unit: "By",
    description: "Bytes held by KV caches (specgate.cache.role: draft or target)",
  },
  kvCacheEvictions: {
    name: "specgate.kv_cache.evictions",
    kind: "counter",
    unit: "{sequence}",
    description: "Sequences whose KV cache was evicted to stay under the memory cap",
  },
} as const satisfies Record<string, MetricDefinition>;

/** Name of a metric as a Prometheus scrape shows it (dots become underscores, counters gain `_total`). */
export function prometheusName(definition: MetricDefinition): string {
  const base = definition.name.replace(/[^a-zA-Z0-9_]/g, "_").replace(/_{2,}/g, "_");
  return definition.kind === "counter" ? `${base}_total` : base;
}

/** Every series name a scrape can carry for the defined metrics (histograms as _bucket, _sum, _count). */
export function prometheusSeriesNames(): Set<string> {
  const names = new Set<string>();
  for (const definition of Object.values(METRICS) as MetricDefinition[]) {
    const name = prometheusName(definition);
    if (definition.kind === "histogram") {
      for (const suffix of ["_bucket", "_sum", "_count"]) names.add(name + suffix);
    } else {
      names.add(name);
    }
  }
  return names;
}

type Read = () => number;

/** Gauges are sampled at collection time from the callbacks registered by the services. */
class GaugeSources {
  private readonly sources = new Set<{ attributes: Attributes; read: Read }>();

  constructor(gauge: ObservableGauge) {
    gauge.addCallback((result: ObservableResult) => {
      for (const source of this.sources) result.observe(source.read(), source.attributes);
    });
  }

  add(attributes: Attributes, read: Read): () => void {
    const source = { attributes, read };
    this.sources.add(source);
    return () => this.sources.delete(source);
  }
}

const SECONDS_PER_MS = 1e-3;

export class SpecgateMetrics {
  private readonly counters: Record<
    | "drafts"
    | "draftTokensProposed"
    | "draftTokensAccepted"
    | "positionProposed"
    | "positionAccepted"
    | "roundPhaseTime"
    | "requests"
    | "historyNeeded"
    | "evictions",
    Counter
  >;
  private readonly histograms: Record<
    | "roundAccepted"
    | "roundK"
    | "roundDuration"
    | "timeToFirstToken"
    | "timePerOutputToken"
    | "tokenUsage"
    | "rpcServerDuration"
    | "httpServerDuration"
    | "verifyQueueWait"
    | "verifyBatchSize"
    | "verifyBatchDuration",
    Histogram
  >;
  private readonly queueDepth: GaugeSources;
  private readonly kvCache: GaugeSources;
  /** Attribute sets of a request's labels, built once per request rather than once per round. */
  private readonly labelAttributes = new WeakMap<RequestLabels, { all: Attributes; modelPair: Attributes }>();

  constructor(meter: Meter) {
    const counter = (d: MetricDefinition) => meter.createCounter(d.name, { unit: d.unit, description: d.description });
    const histogram = (d: MetricDefinition) =>
      meter.createHistogram(d.name, {
        unit: d.unit,
        description: d.description,
        advice: { explicitBucketBoundaries: d.buckets },
      });
    const gauge = (d: MetricDefinition) =>
      meter.createObservableGauge(d.name, { unit: d.unit, description: d.description });
    this.counters = {
      drafts: counter(METRICS.drafts),
      draftTokensProposed: counter(METRICS.draftTokensProposed),
      draftTokensAccepted: counter(METRICS.draftTokensAccepted),
      positionProposed: counter(METRICS.positionProposed),
      positionAccepted: counter(METRICS.positionAccepted),
      roundPhaseTime: counter(METRICS.roundPhaseTime),
      requests: counter(METRICS.requests),
      historyNeeded: counter(METRICS.verifyHistoryNeeded),
      evictions: counter(METRICS.kvCacheEvictions),
    };
    this.histograms = {
      roundAccepted: histogram(METRICS.roundAccepted),
      roundK: histogram(METRICS.roundK),
      roundDuration: histogram(METRICS.roundDuration),
      timeToFirstToken: histogram(METRICS.timeToFirstToken),
      timePerOutputToken: histogram(METRICS.timePerOutputToken),
      tokenUsage: histogram(METRICS.tokenUsage),
      rpcServerDuration: histogram(METRICS.rpcServerDuration),
      httpServerDuration: histogram(METRICS.httpServerDuration),
      verifyQueueWait: histogram(METRICS.verifyQueueWait),
      verifyBatchSize: histogram(METRICS.verifyBatchSize),
      verifyBatchDuration: histogram(METRICS.verifyBatchDuration),
    };
    this.queueDepth = new GaugeSources(gauge(METRICS.verifyQueueDepth));
    this.kvCache = new GaugeSources(gauge(METRICS.kvCacheUsage));
  }

  /**
   * One speculation round, recorded by the gateway when its result arrives: the per-round distributions only (three
   * histogram records), because this runs on every round's critical path. Totals are counted once per request.
   */
  recordRound(labels: RequestLabels, round: VerifiedRound): void {
    const { all, modelPair } = this.attributesOf(labels);
    this.histograms.roundAccepted.record(round.accepted, all);
    this.histograms.roundK.record(round.k, all);
    this.histograms.roundDuration.record(round.roundMs * SECONDS_PER_MS, modelPair);
  }

  /**
   * One finished request (any outcome), recorded by the gateway: counters from the statistics returned to the client,
   * so that acceptance from a scrape equals acceptance computed from the responses.
   */
  recordRequest(labels: RequestLabels, request: FinishedRequest): void {
    const { all, modelPair } = this.attributesOf(labels);
    const { stats } = request;
    this.counters.drafts.add((stats.k_per_round ?? []).filter((k) => k > 0).length, all);
    this.counters.draftTokensProposed.add(stats.draft_tokens, all);
    this.counters.draftTokensAccepted.add(stats.accepted_tokens, all);
    const proposed = stats.proposed_per_position ?? [];
    const accepted = stats.accepted_per_position ?? [];
    for (let i = 0; i < proposed.length; i++) {
      const positioned = { ...modelPair, [ATTR.position]: i + 1 };
      this.counters.positionProposed.add(proposed[i], positioned);
      this.counters.positionAccepted.add(accepted[i] ?? 0, positioned);
    }
    for (const [phase, ms] of [
      ["draft", stats.draft_time_ms],
      ["queue", stats.queue_time_ms],
      ["verify", stats.verify_time_ms],
    ] as const) {
      if (ms !== undefined)
        this.counters.roundPhaseTime.add(ms * SECONDS_PER_MS, { ...modelPair, [ATTR.phase]: phase });
    }
    this.counters.requests.add(1, {
      ...all,
      [ATTR.requestStatus]: request.status,
      [ATTR.finishReason]: request.finishReason,
    });
    const byModel = { [ATTR.model]: labels.model, [ATTR.tenant]: labels.tenant };
    this.histograms.tokenUsage.record(request.inputTokens, { ...byModel, [ATTR.tokenType]: "input" });
    this.histograms.tokenUsage.record(stats.generated_tokens, { ...byModel, [ATTR.tokenType]: "output" });
    if (request.status !== "OK" || stats.generated_tokens === 0) return;
    if (stats.time_to_first_token_ms !== undefined) {
      this.histograms.timeToFirstToken.record(stats.time_to_first_token_ms * SECONDS_PER_MS, byModel);
    }
    const tpot = timePerOutputTokenMs(stats);
    if (tpot !== undefined) this.histograms.timePerOutputToken.record(tpot * SECONDS_PER_MS, byModel);
  }

  /** One incoming gRPC call (method as `package.Service/Method`, status as the gRPC status name). */
  recordRpc(method: string, status: string, durationMs: number): void {
    this.histograms.rpcServerDuration.record(durationMs * SECONDS_PER_MS, {
      [ATTR.rpcSystem]: RPC_SYSTEM_GRPC,
      [ATTR.rpcMethod]: method,
      [ATTR.rpcStatus]: status,
    });
  }

  /** One HTTP generation request: `error.type` only for server failures, as HTTP's conventions ask. */
  recordHttpRequest(
    request: { method: string; route: string },
    statusCode: number,
    errorType: string | undefined,
    durationMs: number,
  ): void {
    this.histograms.httpServerDuration.record(durationMs * SECONDS_PER_MS, {
      [ATTR.httpMethod]: request.method,
      [ATTR.httpRoute]: request.route,
      [ATTR.httpStatus]: statusCode,
      ...(errorType !== undefined && { [ATTR.errorType]: errorType }),
    });
  }

  /** One batched verify on a target replica: its size, its duration and how long each of its jobs waited. */
  recordVerifyBatch(replica: string, batch: { queueWaitsMs: readonly number[]; durationMs: number }): void {
    const attributes = { [ATTR.replica]: replica };
    this.histograms.verifyBatchSize.record(batch.queueWaitsMs.length, attributes);
    this.histograms.verifyBatchDuration.record(batch.durationMs * SECONDS_PER_MS, attributes);
    for (const wait of batch.queueWaitsMs) this.histograms.verifyQueueWait.record(wait * SECONDS_PER_MS, attributes);
  }

  /** A replica answered a round history_needed (its cache lacked the prefix the job claimed): the round is sent again. */
  recordHistoryNeeded(replica: string): void {
    this.counters.historyNeeded.add(1, { [ATTR.replica]: replica });
  }

  private attributesOf(labels: RequestLabels): { all: Attributes; modelPair: Attributes } {
    let attributes = this.labelAttributes.get(labels);
    if (attributes === undefined) {
      const modelPair = { [ATTR.model]: labels.model, [ATTR.drafter]: labels.drafter };
      attributes = { all: { ...modelPair, [ATTR.tenant]: labels.tenant }, modelPair };
      this.labelAttributes.set(labels, attributes);
    }
    return attributes;
  }

  recordKvEvictions(role: "draft" | "target", replica: string, sequences = 1): void {
    this.counters.evictions.add(sequences, { [ATTR.cacheRole]: role, [ATTR.replica]: replica });
  }

  /**
   * Registers a KV cache byte count read at each collection; returns the function that unregisters it. Also starts
   * the cache's eviction counter at 0, so that its rate is defined before the first eviction.
   */
  observeKvCache(role: "draft" | "target", replica: string, bytes: Read): () => void {
    const attributes = { [ATTR.cacheRole]: role, [ATTR.replica]: replica };
    this.counters.evictions.add(0, attributes);
    return this.kvCache.add(attributes, bytes);
  }

  /** Registers a replica's waiting verify job count read at each collection; returns the unregister function. */
  observeQueueDepth(replica: string, jobs: Read): () => void {
    return this.queueDepth.add({ [ATTR.replica]: replica }, jobs);
  }
}
