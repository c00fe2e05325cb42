/**
 * The facts the services hand to telemetry: one speculation round, one finished request, one batched verify.
 * Plain data with durations in milliseconds (as the services measure them); spans and metrics are derived from these,
 * so a trace and a scrape can never disagree.
 */

/** Who a request belongs to and which model pair serves it: the labels of the acceptance metrics. */
export interface RequestLabels {
  tenant: string;
  /** Target model name. */
  model: string;
  /** Drafter name (the draft half of the model pair), e.g. `int4`, `early-exit`, `ngram`; `none` for K = 0 only. */
  drafter: string;
}

export interface VerifiedRound {
  /** 1-based round number within the request (the wire protocol's `round`). */
  round: number;
  /** Speculation length asked of the drafter this round (0: plain decoding). */
  k: number;
  /** Draft tokens actually proposed (at most k; fewer when the drafter has nothing to offer); a tree's nodes. */
  proposed: number;
  /** Leading draft tokens the target accepted (a tree's accepted path). */
  accepted: number;
  /**
   * The target's token came after every proposed token was accepted (for a tree: after its path reached a leaf).
   * Absent: accepted = proposed decides.
   */
  bonus?: boolean;
  /** The target's token appended after the accepted prefix (correction, or bonus when all were accepted). */
  nextToken: number;
  /** Replica that verified the round. */
  replica: string;
  /** Sequences in the batched forward that verified this round. */
  batchSize: number;
  /** True when the replica rebuilt the sequence's cache from the history for this round. */
  reprefilled: boolean;
  draftMs: number;
  queueWaitMs: number;
  verifyMs: number;
  /** Wall time of the whole round at the gateway (draft + enqueue + wait + verify + transport). */
  roundMs: number;
}

/**
 * The statistics returned to the client (the wire SpeculationStats, snake_case as in services/engine/stats.ts). Every
 * scalar and list field becomes a `specgate.<field>` attribute of the request span, so the trace carries exactly what
 * the client received; the fields named here also feed the metrics.
 */
export interface ReturnedStats {
  rounds: number;
  generated_tokens: number;
  draft_tokens: number;
  accepted_tokens: number;
  /** K of each round in order (0: the round verified no draft). */
  k_per_round?: readonly number[];
  /** Index i: rounds that proposed a token at draft position i (0-based), and rounds whose token there was accepted. */
  proposed_per_position?: readonly number[];
  accepted_per_position?: readonly number[];
  /** Time the request's rounds spent drafting, waiting in verify queues and verifying, summed, milliseconds. */
  draft_time_ms?: number;
  queue_time_ms?: number;
  verify_time_ms?: number;
  /** Wall time from request arrival to the first generated token; absent or 0 with no token generated. */
  time_to_first_token_ms?: number;
  /** Wall time from request arrival to the end. */
  total_time_ms?: number;
}

export interface FinishedRequest {
  stats: ReturnedStats;
  /** Prompt tokens (BOS included). */
  inputTokens: number;
  /** Engine finish reason (`length`, `eos`, `stop`, `context_length`); `error` when the request did not finish. */
  finishReason: string;
  /**
   * gRPC status name of the outcome: `OK`, `CANCELLED`, `DEADLINE_EXCEEDED`, ... (over HTTP, the status the gateway
   * ended the request with, whatever HTTP status said it).
   */
  status: string;
  /** The HTTP response's status, for a request that came over HTTP (200 for a stream, even one that failed). */
  httpStatusCode?: number;
}

/** 1-based position of the first rejected draft token, or undefined when all proposed tokens were accepted. */
export function firstRejection(round: Pick<VerifiedRound, "proposed" | "accepted" | "bonus">): number | undefined {
  return isBonus(round) ? undefined : round.accepted + 1;
}

export function isBonus(round: Pick<VerifiedRound, "proposed" | "accepted" | "bonus">): boolean {
  return round.bonus ?? round.accepted >= round.proposed;
}

/** Time per output token after the first (the usual TPOT); undefined with fewer than two tokens or no timings. */
export function timePerOutputTokenMs(stats: ReturnedStats): number | undefined {
  const { time_to_first_token_ms: first, total_time_ms: total, generated_tokens: tokens } = stats;
  if (first === undefined || total === undefined || tokens < 2) return undefined;
  return (total - first) / (tokens - 1);
}
