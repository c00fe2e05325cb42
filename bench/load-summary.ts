/**
 * What a load run reports, from what happened to each request. Pure.
 *
 * - completed: ended normally; shed: refused with RESOURCE_EXHAUSTED before any token (the gateway's admission);
 *   failed: any other error of a request (an accepted request that broke, a deadline, a refusal of another kind).
 * - ttft: send → first token at the client. tpot: first → last token over the tokens after the first (requests with
 *   at least two tokens). Percentiles are nearest-rank over the completed requests.
 * - tokens_per_s and goodput_rps divide by the run's wall time, first send to last answer; goodput counts the
 *   completed requests that met the latency objective (ttft and tpot both within it).
 * - concurrency: the mean number of completed requests in flight (Little's law: their summed latency over the wall
 *   time); at the sustainable rate it is the --max-in-flight that keeps admitted requests within the objective.
 */
import { quantile, round, sum } from "./stats.ts";

export type RequestOutcome =
  | {
      readonly kind: "completed";
      readonly sentMs: number;
      /** Absent when the request produced no token. */
      readonly firstTokenMs?: number;
      readonly lastTokenMs?: number;
      readonly endMs: number;
      readonly outputTokens: number;
    }
  | { readonly kind: "shed"; readonly sentMs: number; readonly endMs: number; readonly retryAfterMs?: number }
  | { readonly kind: "failed"; readonly sentMs: number; readonly endMs: number; readonly code: string };

export interface LatencyObjective {
  readonly ttftMs: number;
  readonly tpotMs: number;
}

export interface LoadSummary {
  readonly requests: number;
  readonly completed: number;
  readonly shed: number;
  /** Shed requests whose refusal carried a retry hint. */
  readonly shed_with_retry_hint: number;
  readonly failed: number;
  /** Failed requests by gRPC status name. */
  readonly failures: Readonly<Record<string, number>>;
  readonly ttft_ms_p50: number | null;
  readonly ttft_ms_p99: number | null;
  readonly tpot_ms_p50: number | null;
  readonly tpot_ms_p99: number | null;
  /** Send → end of the completed requests. */
  readonly latency_ms_p99: number | null;
  readonly output_tokens: number;
  readonly wall_s: number;
  readonly tokens_per_s: number;
  readonly goodput_rps: number;
  /** Share of completed requests that met the objective. */
  readonly slo_attainment: number | null;
  readonly concurrency: number;
}

export function timeToFirstTokenMs(outcome: RequestOutcome): number | undefined {
  if (outcome.kind !== "completed" || outcome.firstTokenMs === undefined) return undefined;
  return outcome.firstTokenMs - outcome.sentMs;
}

export function timePerOutputTokenMs(outcome: RequestOutcome): number | undefined {
  if (outcome.kind !== "completed" || outcome.outputTokens < 2) return undefined;
  if (outcome.firstTokenMs === undefined || outcome.lastTokenMs === undefined) return undefined;
  return (outcome.lastTokenMs - outcome.firstTokenMs) / (outcome.outputTokens - 1);
}

export function meetsObjective(outcome: RequestOutcome, objective: LatencyObjective): boolean {
  if (outcome.kind !== "completed") return false;
  const ttft = timeToFirstTokenMs(outcome);
  const tpot = timePerOutputTokenMs(outcome);
  return ttft !== undefined && ttft <= objective.ttftMs && (tpot === undefined || tpot <= objective.tpotMs);
}

/** `q`-quantile rounded to 0.1 ms; null when there are no values (JSON has no NaN). */
function percentile(values: readonly number[], q: number): number | null {
  return values.length === 0 ? null : round(quantile(values, q), 1);
}

export function summarize(outcomes: readonly RequestOutcome[], objective: LatencyObjective): LoadSummary {
  const completed = outcomes.filter((o) => o.kind === "completed");
  const shed = outcomes.filter((o) => o.kind === "shed");
  const failed = outcomes.filter((o) => o.kind === "failed");
  const failures: Record<string, number> = {};
  for (const f of failed) failures[f.code] = (failures[f.code] ?? 0) + 1;
  const defined = (values: (number | undefined)[]) => values.filter((v): v is number => v !== undefined);
  const ttfts = defined(completed.map(timeToFirstTokenMs));
  const tpots = defined(completed.map(timePerOutputTokenMs));
  const wallMs =
    outcomes.length === 0 ? 0 : Math.max(...outcomes.map((o) => o.endMs)) - Math.min(...outcomes.map((o) => o.sentMs));
  const wallS = wallMs / 1000;
  const perSecond = (count: number) => (wallS > 0 ? round(count / wallS) : 0);
  const outputTokens = sum(completed.map((o) => o.outputTokens));
  const good = completed.filter((o) => meetsObjective(o, objective)).length;
  const latencies = completed.map((o) => o.endMs - o.sentMs);
  return {
    requests: outcomes.length,
    completed: completed.length,
    shed: shed.length,
    shed_with_retry_hint: shed.filter((o) => o.retryAfterMs !== undefined).length,
    failed: failed.length,
    failures,
    ttft_ms_p50: percentile(ttfts, 0.5),
    ttft_ms_p99: percentile(ttfts, 0.99),
    tpot_ms_p50: percentile(tpots, 0.5),
    tpot_ms_p99: percentile(tpots, 0.99),
    latency_ms_p99: percentile(latencies, 0.99),
    output_tokens: outputTokens,
    wall_s: round(wallS, 2),
    tokens_per_s: perSecond(outputTokens),
    goodput_rps: perSecond(good),
    slo_attainment: completed.length === 0 ? null : round(good / completed.length),
    concurrency: wallMs > 0 ? round(sum(latencies) / wallMs, 2) : 0,
  };
}

/**
 * Whether a run kept up with its offered load: nothing shed or failed and at least `attainment` of the requests met
 * the objective (the criterion of the sustainable-rate search).
 */
export function sustained(summary: LoadSummary, attainment: number): boolean {
  return (
    summary.requests > 0 &&
    summary.shed === 0 &&
    summary.failed === 0 &&
    summary.completed > 0 &&
    (summary.slo_attainment ?? 0) >= attainment
  );
}
