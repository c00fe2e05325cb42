/**
 * One request's round loop, distributed: ask the draft service for K tokens → enqueue the verify job on the
 * sequence's replica → commit the accepted tokens and the target's token (stop conditions, UTF-8-safe text) → tell
 * the draft where to roll back to, together with the next round's request → stream the new tokens (a draft service
 * that hears the target's verdicts has usually drafted that next round already, draft-link.ts). K comes from the
 * engine's policy (fixed or adaptive over costs measured here, through gRPC and the queue); K = 0 when the request
 * asked for no drafter or the draft service cannot answer. Caches are released in both services however the request
 * ends.
 */
import type { Logger } from "pino";
import type { DraftDistribution, DraftDistribution__Output } from "../gen/specgate/v1/DraftDistribution.ts";
import type { FinishReason__Output } from "../gen/specgate/v1/FinishReason.ts";
import type { Proposal__Output } from "../gen/specgate/v1/Proposal.ts";
import type { RoundTiming__Output } from "../gen/specgate/v1/RoundTiming.ts";
import type { SpeculationStats__Output } from "../gen/specgate/v1/SpeculationStats.ts";
import { messageCodec } from "../proto/codec.ts";
import { type CostModel, createKPolicy } from "../services/engine/k-policy.ts";
import { SequenceState } from "../services/engine/sequence.ts";
import { emptyStats, recordRound } from "../services/engine/stats.ts";
import type { Tokenizer } from "../services/runtime/tokenizer/tokenizer.ts";
import { injectIntoCarrier, type RequestTrace } from "../services/telemetry/index.ts";
import type { DraftLink } from "./draft-link.ts";
import type { ReplicaRouter } from "./replica-router.ts";
import { NO_DRAFTER, type ValidRequest } from "./validation.ts";

export interface TargetModel {
  readonly name: string;
  readonly contextLength: number;
  readonly eosTokenId: number | undefined;
}

export interface GenerationServices {
  readonly draft: DraftLink;
  readonly router: ReplicaRouter;
  readonly tokenizer: Tokenizer;
  readonly model: TargetModel;
  /** Measured draft and verify costs of a drafter/target pair, shared by its requests (adaptive K). */
  costs(drafter: string): CostModel;
  readonly logger: Logger;
}

export interface GenerationIds {
  readonly requestId: string;
  /** Cache id in both services: unique per request, whatever request id a client sent. */
  readonly sequenceId: string;
}

export interface Delta {
  readonly token_ids: number[];
  readonly text: string;
  readonly round: number;
}

export interface Outcome {
  readonly tokenIds: number[];
  readonly text: string;
  readonly finishReason: FinishReason__Output;
  readonly stats: SpeculationStats__Output;
  readonly promptTokens: number;
}

const FINISH_REASONS = {
  length: "FINISH_REASON_LENGTH",
  eos: "FINISH_REASON_EOS",
  stop: "FINISH_REASON_STOP",
  context_length: "FINISH_REASON_CONTEXT_LENGTH",
} as const;

const distributionCodec = messageCodec<DraftDistribution, DraftDistribution__Output>("DraftDistribution");

function wireBytes(distributions: readonly DraftDistribution__Output[]): number {
  let bytes = 0;
  for (const d of distributions) bytes += distributionCodec.encode(d).length;
  return bytes;
}

/**
 * Runs the request to its end, calling `onDelta` with each round's new tokens. Rejects with the signal's reason
 * when aborted (cancellation, deadline, drain), after releasing the caches.
 */
export async function runGeneration(
  request: ValidRequest,
  ids: GenerationIds,
  services: GenerationServices,
  trace: RequestTrace,
  signal: AbortSignal,
  deadlineUnixMs: number,
  onDelta: (delta: Delta) => void,
): Promise<Outcome> {
  const started = performance.now();
  const { draft, router, model } = services;
  const sequence = new SequenceState(
    request.prompt,
    {
      maxNewTokens: request.maxNewTokens,
      contextLength: model.contextLength,
      eosTokenId: model.eosTokenId,
      stopStrings: request.stopStrings,
    },
    services.tokenizer,
  );
  const speculating = request.drafter !== NO_DRAFTER;
  const costs = services.costs(request.drafter);
  const policy = createKPolicy(request.kPolicy, costs);
  const stats = emptyStats();
  const extra = {
    queue_time_ms: 0,
    time_to_first_token_ms: 0,
    fallback_rounds: 0,
    target_reprefills: 0,
    draft_distribution_bytes: 0,
    replicas: [] as string[],
    round_timings: [] as RoundTiming__Output[],
  };
  const drafted = {
    sequenceId: ids.sequenceId,
    drafter: request.drafter,
    sampling: request.sampling,
    history: () => sequence.tokens,
  };
  /**
   * Starts a round: its K, its span, and its proposal request on the wire (awaited by the loop). A round starts as
   * soon as the previous one has committed its tokens, before they are streamed, so that the draft service works while
   * the gateway streams; its timings run from this start to the next round's.
   */
  const startRound = (round: number) => {
    const asked = speculating ? Math.min(policy.nextK(), sequence.draftBudget()) : 0;
    const roundTrace = trace.startRound();
    const traceContext = injectIntoCarrier(roundTrace.context);
    return {
      round,
      asked,
      start: performance.now(),
      roundTrace,
      traceContext,
      // The draft service drafts the next round on this round's verdict with the same K (the gateway's next ask may
      // take fewer, or update it for the round after).
      proposal: asked > 0 ? draft.propose(drafted, round, asked, asked, traceContext) : undefined,
    };
  };
  try {
    signal.throwIfAborted();
    let current = startRound(1);
    for (;;) {
      const { round, asked, start: roundStart, roundTrace, traceContext } = current;
      let proposal: Proposal__Output | undefined;
      if (current.proposal) {
        proposal = await current.proposal;
        if (!proposal) extra.fallback_rounds++;
      }
      signal.throwIfAborted();
      // A proposal drafted on the last verdict may hold more than this round asked for: its prefix is what a shorter
      // ask would have drafted (draws depend on the position only).
      const draftTokens = proposal?.tokens.slice(0, asked) ?? [];
      const distributions =
        request.sampling.temperature > 0 ? (proposal?.distributions.slice(0, draftTokens.length) ?? []) : [];
      extra.draft_distribution_bytes += wireBytes(distributions);
      const draftDone = performance.now();

      const { result, replicaId } = await router.verify(
        ids.sequenceId,
        {
          sequence_id: ids.sequenceId,
          request_id: ids.requestId,
          round,
          history: sequence.tokens,
          draft_tokens: draftTokens,
          draft_distributions: distributions,
          sampling: request.sampling,
          acceptance: request.acceptance,
          relaxed: request.relaxed,
          trace_context: traceContext,
          deadline_unix_ms: deadlineUnixMs,
          model: model.name,
          draft_verdict_channel: proposal?.verdict_channel ?? "",
        },
        signal,
      );
      const verified = performance.now();

      const historyLength = sequence.tokens.length;
      const accepted = Math.min(result.accepted, draftTokens.length);
      const committed = sequence.commit([...draftTokens.slice(0, accepted), result.next_token]);
      policy.observe(draftTokens.length, accepted);
      let upcoming: ReturnType<typeof startRound> | undefined;
      if (!sequence.finished) {
        signal.throwIfAborted();
        // Also after rounds without a proposal (K = 0, fallback): the draft appends the target's token, so its history
        // stays in step and needs no rebuild when speculation resumes. The settlement and the next proposal request
        // leave together and wake the draft service once.
        if (speculating) draft.accept(ids.sequenceId, round, accepted, [result.next_token]);
        upcoming = startRound(round + 1);
        // HTTP/2 sends a session's frames from the event loop's next check phase: let them leave before the round's
        // bookkeeping and streaming, which have until the proposal comes back.
        if (upcoming.proposal) {
          await new Promise((resolve) => setImmediate(resolve));
          signal.throwIfAborted();
        }
      }
      const roundEnd = upcoming?.start ?? performance.now();

      recordRound(stats, {
        k: proposal ? asked : 0,
        proposed: draftTokens.length,
        accepted,
        emitted: committed.tokens.length,
        draftMs: draftDone - roundStart,
        verifyMs: result.verify_time_ms,
      });
      extra.queue_time_ms += result.queue_wait_ms;
      if (result.reprefilled) extra.target_reprefills++;
      if (!extra.replicas.includes(replicaId)) extra.replicas.push(replicaId);
      // Costs as adaptive K must weigh them here: round trips through gRPC and the queue. Rounds that (re)filled a
      // cache measure the prefill, not a verify step.
      if (round > 1 && !result.reprefilled) {
        if (draftTokens.length > 0) costs.recordDraft(draftDone - roundStart, draftTokens.length);
        costs.recordVerify(draftTokens.length + 1, verified - draftDone);
      }
      if (committed.tokens.length > 0) {
        if (extra.time_to_first_token_ms === 0) extra.time_to_first_token_ms = performance.now() - started;
        onDelta({ token_ids: committed.tokens, text: committed.text, round });
      }
      const timing = {
        round_ms: roundEnd - roundStart,
        draft_wait_ms: draftDone - roundStart,
        draft_compute_ms: proposal?.draft_time_ms ?? 0,
        verify_wait_ms: verified - draftDone,
        queue_wait_ms: result.queue_wait_ms,
        verify_compute_ms: result.verify_time_ms,
        batch_size: result.batch_size,
        drafted_on_verdict: proposal?.on_verdict ?? false,
      };
      extra.round_timings.push(timing);
      // The round's span ends with its tokens handed over and carries the very timings the client receives.
      roundTrace.end({
        round,
        k: proposal ? asked : 0,
        proposed: draftTokens.length,
        accepted,
        nextToken: result.next_token,
        replica: replicaId,
        batchSize: timing.batch_size,
        reprefilled: result.reprefilled,
        draftMs: timing.draft_wait_ms,
        queueWaitMs: timing.queue_wait_ms,
        verifyMs: timing.verify_compute_ms,
        roundMs: timing.round_ms,
      });
      services.logger.trace({ sequenceId: ids.sequenceId, round, asked, historyLength, accepted }, "round");
      if (upcoming === undefined) break;
      current = upcoming;
    }
  } finally {
    draft.close(ids.sequenceId);
    void router.release(ids.sequenceId);
  }
  const { k_per_round, ...engineStats } = stats;
  return {
    tokenIds: sequence.generated,
    text: sequence.text,
    finishReason: FINISH_REASONS[sequence.finishReason ?? "length"],
    promptTokens: request.prompt.length,
    stats: {
      ...engineStats,
      k_per_round,
      ...extra,
      total_time_ms: performance.now() - started,
      drafter: request.drafter,
    },
  };
}
