/**
 * One request's round loop, distributed: ask the draft service for K tokens → send the verify job to the sequence's
 * replica → accept (the engine's round step, round.ts: commit the accepted tokens and the target's token under the
 * stop conditions, UTF-8-safe text) → tell the draft where to roll back to, together with the next round's request →
 * stream the new tokens (a draft service that hears the target's verdicts has usually drafted that next round
 * already, draft-link.ts). K comes from the engine's policy (fixed or adaptive over costs measured here, through gRPC
 * and Redis); K = 0 when the request asked for no drafter or the draft service cannot answer. Caches are released in
 * both services however the request ends.
 */
import type { Logger } from "pino";
import type { DraftDistribution, DraftDistribution__Output } from "../gen/specgate/v1/DraftDistribution.ts";
import type { DraftTree, DraftTree__Output } from "../gen/specgate/v1/DraftTree.ts";
import type { FinishReason__Output } from "../gen/specgate/v1/FinishReason.ts";
import type { Proposal__Output } from "../gen/specgate/v1/Proposal.ts";
import type { RoundTiming__Output } from "../gen/specgate/v1/RoundTiming.ts";
import type { SpeculationStats__Output } from "../gen/specgate/v1/SpeculationStats.ts";
import type { VerifyJob } from "../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../gen/specgate/v1/VerifyResult.ts";
import { messageCodec } from "../proto/codec.ts";
import { fromWire } from "../proto/draft-distribution.ts";
import { type CostModel, chainWork, createKPolicy } from "../services/engine/k-policy.ts";
import { type RoundOutcome, type RoundPlan, SpeculativeSequence } from "../services/engine/round.ts";
import { SequenceState } from "../services/engine/sequence.ts";
import { decodeTree, encodeTree, type TokenTree, treePrefix } from "../services/engine/token-tree.ts";
import { type Branching, FixedTreeShape, type TreeShaper, treeWork } from "../services/engine/tree-policy.ts";
import type { Tokenizer } from "../services/runtime/tokenizer/tokenizer.ts";
import { injectIntoCarrier, type RequestTrace, type RoundTrace } from "../services/telemetry/index.ts";
import type { DraftedSequence, DraftLink } from "./draft-link.ts";
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
  /** Trees up to `shape` where they pay, else the chain (TreePolicy): one per drafter and shape, shared by its requests. */
  treeShaper(drafter: string, shape: Branching): TreeShaper;
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
const treeCodec = messageCodec<DraftTree, DraftTree__Output>("DraftTree");

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
  const generation = new Generation(request, ids, services, trace, deadlineUnixMs, onDelta);
  const { speculation } = generation;
  try {
    signal.throwIfAborted();
    let current = generation.startRound();
    for (;;) {
      const proposal = current.proposal && (await current.proposal);
      signal.throwIfAborted();
      const draft = generation.takeDraft(current, proposal);
      const draftDone = performance.now();
      const verification = await services.router.verify(
        ids.sequenceId,
        generation.verifyJob(current, draft, proposal),
        signal,
      );
      const verified = performance.now();
      const { result } = verification;
      const drafted = draft ?? generation.selfDraft(result);
      const outcome = speculation.accept(current.plan, drafted?.tree ? { tree: drafted.tree } : drafted, {
        accepted: result.accepted,
        token: result.next_token,
        path: result.path,
      });
      let upcoming: RoundInFlight | undefined;
      if (!speculation.sequence.finished) {
        signal.throwIfAborted();
        // Also after rounds without a proposal (K = 0, fallback): the draft appends the target's token, so its history
        // stays in step and needs no rebuild when speculation resumes. The settlement and the next proposal request
        // leave together and wake the draft service once.
        speculation.rollBack(outcome);
        upcoming = generation.startRound();
        // HTTP/2 sends a session's frames from the event loop's next check phase: let them leave before the round's
        // bookkeeping and streaming, which have until the proposal comes back.
        if (upcoming.proposal) {
          await new Promise((resolve) => setImmediate(resolve));
          signal.throwIfAborted();
        }
      }
      const roundEnd = upcoming?.start ?? performance.now();
      const timing = roundTiming(current, proposal, draftDone, verified, roundEnd, result);
      generation.finishRound(current, draft, outcome, timing, verification);
      if (upcoming === undefined) break;
      current = upcoming;
    }
  } finally {
    services.draft.close(ids.sequenceId);
    void services.router.release(ids.sequenceId);
  }
  return generation.outcome();
}

/**
 * A round on its way: planned, its span open, its proposal request on the wire (awaited by the loop). A round starts
 * as soon as the previous one has committed its tokens, before they are streamed, so that the draft service works
 * while the gateway streams; its timings run from this start to the next round's.
 */
interface RoundInFlight {
  readonly plan: RoundPlan;
  readonly start: number;
  readonly span: RoundTrace;
  readonly traceContext: Record<string, string>;
  readonly proposal: Promise<Proposal__Output | undefined> | undefined;
}

/** The part of a proposal a round uses, in wire form; a tree round's tree also as the engine reads it. */
interface WireDraft {
  readonly tokens: number[];
  readonly distributions: DraftDistribution__Output[];
  readonly tree?: TokenTree;
  readonly wireTree?: DraftTree;
}

/** The round's timings, as the client receives them and the round's span carries them. */
function roundTiming(
  round: RoundInFlight,
  proposal: Proposal__Output | undefined,
  draftDone: number,
  verified: number,
  roundEnd: number,
  result: VerifyResult__Output,
): RoundTiming__Output {
  return {
    round_ms: roundEnd - round.start,
    draft_wait_ms: draftDone - round.start,
    // A self-drafted round's drafting happened on the replica, inside its verify.
    draft_compute_ms: proposal?.draft_time_ms ?? result.draft_time_ms,
    verify_wait_ms: verified - draftDone,
    queue_wait_ms: result.queue_wait_ms,
    verify_compute_ms: result.verify_time_ms,
    batch_size: result.batch_size,
    drafted_on_verdict: proposal?.on_verdict ?? false,
  };
}

/** One request's state between its rounds: the engine's round step plus what the services add to it. */
class Generation {
  readonly speculation: SpeculativeSequence;
  private readonly started = performance.now();
  private readonly costs: CostModel;
  private readonly drafted: DraftedSequence;
  /** The statistics the services add to the engine's. */
  private readonly extra = {
    queue_time_ms: 0,
    time_to_first_token_ms: 0,
    fallback_rounds: 0,
    target_reprefills: 0,
    draft_distribution_bytes: 0,
    draft_tree_bytes: 0,
    replicas: [] as string[],
    round_timings: [] as RoundTiming__Output[],
  };

  constructor(
    private readonly request: ValidRequest,
    private readonly ids: GenerationIds,
    private readonly services: GenerationServices,
    private readonly trace: RequestTrace,
    private readonly deadlineUnixMs: number,
    private readonly onDelta: (delta: Delta) => void,
  ) {
    const { draft, model } = services;
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
    this.costs = services.costs(request.drafter);
    const { tree } = request;
    const shaper =
      tree && (tree.adaptive ? services.treeShaper(request.drafter, tree.shape) : new FixedTreeShape(tree.shape));
    this.speculation = new SpeculativeSequence(
      sequence,
      createKPolicy(request.kPolicy, this.costs),
      request.drafter === NO_DRAFTER
        ? undefined
        : request.selfDrafter !== undefined
          ? // The replica settles its drafting state in the forward that verified the round.
            { rollBack: () => undefined }
          : {
              rollBack: (outcome) =>
                draft.accept(ids.sequenceId, outcome.round, outcome.accepted, [outcome.token], outcome.path),
            },
      shaper,
    );
    this.drafted = {
      sequenceId: ids.sequenceId,
      drafter: request.drafter,
      sampling: request.sampling,
      history: () => sequence.tokens,
    };
  }

  startRound(): RoundInFlight {
    const plan = this.speculation.plan();
    const span = this.trace.startRound();
    const traceContext = injectIntoCarrier(span.context);
    return {
      plan,
      start: performance.now(),
      span,
      traceContext,
      // The draft service drafts the next round on this round's verdict with the same K and shape (the gateway's next
      // ask may take fewer, or update them for the round after).
      proposal:
        plan.k > 0 && this.request.selfDrafter === undefined
          ? this.services.draft.propose(this.drafted, plan.round, plan.k, plan.k, traceContext, plan.branching)
          : undefined,
    };
  }

  /** The tree a replica drafted for a self-drafted round and returned with its verdict; none if it drafted none. */
  selfDraft(result: VerifyResult__Output): WireDraft | undefined {
    const wire = result.draft_tree;
    if (this.request.selfDrafter === undefined || !wire || wire.tokens.length === 0) return undefined;
    const sampled = this.request.sampling.temperature > 0 && wire.distributions.length > 0;
    const tree = decodeTree(wire, sampled ? wire.distributions.map(fromWire) : undefined);
    this.extra.draft_tree_bytes += treeCodec.encode(wire).length;
    return { tokens: [], distributions: [], tree };
  }

  /** The round's draft, or undefined when it has none (K = 0, or the draft service could not answer). */
  takeDraft(round: RoundInFlight, proposal: Proposal__Output | undefined): WireDraft | undefined {
    if (!proposal) {
      if (round.proposal) this.extra.fallback_rounds++;
      return undefined;
    }
    if (proposal.tree && proposal.tree.tokens.length > 0) return this.#takeTree(round, proposal.tree);
    // A proposal drafted on the last verdict may hold more than this round asked for: its prefix is what a shorter
    // ask would have drafted (draws depend on the position only).
    const tokens = proposal.tokens.slice(0, round.plan.k);
    const distributions = this.request.sampling.temperature > 0 ? proposal.distributions.slice(0, tokens.length) : [];
    this.extra.draft_distribution_bytes += wireBytes(distributions);
    return { tokens, distributions };
  }

  /**
   * A proposed tree, cut to the round's K (a tree drafted on the last verdict may be deeper) and to the room left in
   * the target's context (the replica refuses a job past it); none if malformed.
   */
  #takeTree(round: RoundInFlight, wire: DraftTree__Output): WireDraft | undefined {
    const sampled = this.request.sampling.temperature > 0 && wire.distributions.length > 0;
    const room = this.services.model.contextLength - this.speculation.sequence.tokens.length;
    let tree: TokenTree;
    try {
      const proposed = decodeTree(wire, sampled ? wire.distributions.map(fromWire) : undefined);
      tree = treePrefix(proposed, round.plan.k, room);
    } catch (error) {
      this.services.logger.warn({ err: error, round: round.plan.round }, "malformed draft tree; round runs without it");
      this.extra.fallback_rounds++;
      return undefined;
    }
    const distributions = sampled ? wire.distributions.slice(0, tree.tokens.length) : [];
    const wireTree = { ...encodeTree(tree), distributions };
    this.extra.draft_distribution_bytes += wireBytes(distributions);
    this.extra.draft_tree_bytes += treeCodec.encode(wireTree).length;
    return { tokens: [], distributions: [], tree, wireTree };
  }

  verifyJob(round: RoundInFlight, draft: WireDraft | undefined, proposal: Proposal__Output | undefined): VerifyJob {
    const request = this.request;
    return {
      sequence_id: this.ids.sequenceId,
      request_id: this.ids.requestId,
      round: round.plan.round,
      history: this.speculation.sequence.tokens,
      draft_tokens: draft?.tokens ?? [],
      draft_distributions: draft?.distributions ?? [],
      sampling: request.sampling,
      acceptance: request.acceptance,
      relaxed: request.relaxed,
      trace_context: round.traceContext,
      deadline_unix_ms: this.deadlineUnixMs,
      model: this.services.model.name,
      draft_verdict_channel: proposal?.verdict_channel ?? "",
      ...(draft?.wireTree && { draft_tree: draft.wireTree }),
      // Also at K = 0: the replica's drafting state then settles on the round, ready for the next.
      ...(request.selfDrafter !== undefined && {
        self_draft: {
          drafter: request.selfDrafter,
          depth: round.plan.k,
          // A chain is a tree one wide.
          shape: round.plan.branching ?? { width: 1, nodes: round.plan.k },
          lookahead: request.lookahead ?? null,
        },
      }),
    };
  }

  /** The round's bookkeeping once the next round is on its way: statistics, costs, streaming, timings, its span. */
  finishRound(
    round: RoundInFlight,
    draft: WireDraft | undefined,
    outcome: RoundOutcome,
    timing: RoundTiming__Output,
    { result, replicaId }: { result: VerifyResult__Output; replicaId: string },
  ): void {
    const extra = this.extra;
    this.speculation.record(outcome, timing.draft_wait_ms, timing.verify_compute_ms);
    extra.queue_time_ms += timing.queue_wait_ms;
    if (result.reprefilled) extra.target_reprefills++;
    if (!extra.replicas.includes(replicaId)) extra.replicas.push(replicaId);
    // Costs as adaptive K must weigh them here: round trips through gRPC and Redis. Rounds that (re)filled a cache
    // measure the prefill, not a verify step.
    if (outcome.round > 1 && !result.reprefilled) {
      const work = draft?.tree ? treeWork(draft.tree) : chainWork(outcome.proposed);
      this.costs.recordRound(work, timing.draft_wait_ms, timing.verify_wait_ms);
    }
    const { committed } = outcome;
    if (committed.tokens.length > 0) {
      if (extra.time_to_first_token_ms === 0) extra.time_to_first_token_ms = performance.now() - this.started;
      this.onDelta({ token_ids: committed.tokens, text: committed.text, round: outcome.round });
    }
    extra.round_timings.push(timing);
    // The round's span ends with its tokens handed over and carries the very timings the client receives.
    round.span.end({
      round: outcome.round,
      k: outcome.k,
      proposed: outcome.proposed,
      accepted: outcome.accepted,
      bonus: result.bonus,
      nextToken: outcome.token,
      replica: replicaId,
      batchSize: timing.batch_size,
      reprefilled: result.reprefilled,
      draftMs: timing.draft_wait_ms,
      queueWaitMs: timing.queue_wait_ms,
      verifyMs: timing.verify_compute_ms,
      roundMs: timing.round_ms,
    });
    this.services.logger.trace(
      {
        sequenceId: this.ids.sequenceId,
        round: outcome.round,
        asked: round.plan.k,
        historyLength: outcome.historyLength,
        accepted: outcome.accepted,
      },
      "round",
    );
  }

  outcome(): Outcome {
    const { sequence, stats } = this.speculation;
    const { k_per_round, ...engineStats } = stats;
    return {
      tokenIds: sequence.generated,
      text: sequence.text,
      finishReason: FINISH_REASONS[sequence.finishReason ?? "length"],
      promptTokens: this.request.prompt.length,
      stats: {
        ...engineStats,
        k_per_round,
        ...this.extra,
        total_time_ms: performance.now() - this.started,
        drafter: this.request.drafter,
      },
    };
  }
}
