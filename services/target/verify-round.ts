/**
 * One batched verify over the jobs of many sequences: bring each sequence's cache to the longest prefix of its job's
 * history it holds (re-prefilling from the history when it holds none; a job naming a held prefix the cache does not
 * hold is answered history_needed instead, before the forward), score every sequence's uncached history and
 * draft tokens in ONE forward, apply the acceptance rule per sequence (the engine's verifyOnTarget, the very code the
 * in-process loop runs), trim each cache to the accepted length, and produce one VerifyResult (or error) per job.
 */
import type { VerifyJob__Output } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult } from "../../gen/specgate/v1/VerifyResult.ts";
import { branchSize } from "../engine/lookahead-layout.ts";
import type { VerifyJob as EngineVerifyJob } from "../engine/target-verifier.ts";
import { verifyOnTarget } from "../engine/target-verifier.ts";
import { children, encodeTree, pathTokens, ROOT } from "../engine/token-tree.ts";
import { nowUnixMs } from "../replica-link/clock.ts";
import { VerifyJobError } from "../replica-link/verify-errors.ts";
import { CacheCapacityError, ContextLengthError } from "../runtime/runtime-errors.ts";
import { type PlannedSelfDraft, SelfDrafts } from "./self-drafts.ts";
import type { SequenceCache } from "./sequence-cache.ts";
import { checkAdmission, draftSize, heldPrefixOf, historyLength, toEngineJob } from "./verify-job.ts";

export type VerifyOutcome = VerifyResult | VerifyJobError;

/** The facts of one batched verify, for statistics, metrics and traces. */
export interface BatchReport {
  readonly jobs: readonly VerifyJob__Output[];
  /** Per job, in order: its result or why it failed. */
  readonly outcomes: readonly VerifyOutcome[];
  /** Sequences in the forward (jobs that passed their checks). */
  readonly size: number;
  readonly startedAtUnixMs: number;
  /** Checks, forward, acceptance and cache trims. */
  readonly durationMs: number;
  /** Positions the forward scored over all sequences. */
  readonly positions: number;
  readonly reprefills: number;
  /** Jobs answered history_needed. */
  readonly historyNeeded: number;
  /** Idle sequences evicted to make room for this batch. */
  readonly evicted: number;
}

/**
 * Called as a batch starts; the function it returns (if any) is called with the batch's report as it ends. The seam
 * for telemetry: a batch span starts and ends exactly around the work.
 */
export type BatchObserver = (jobs: readonly VerifyJob__Output[]) => ((report: BatchReport) => void) | undefined;

interface Admitted {
  readonly index: number;
  readonly job: VerifyJob__Output;
  round: EngineVerifyJob;
  reprefilled: boolean;
  positions: number;
  /** A self-drafted round: what the replica drafted, the history it stands on, and its drafting time so far. */
  selfDraft?: { readonly planned: PlannedSelfDraft; readonly history: readonly number[]; ms: number };
}

function forwardFailure(error: unknown): VerifyJobError {
  if (error instanceof CacheCapacityError) return new VerifyJobError("RESOURCE_EXHAUSTED", error.message);
  if (error instanceof ContextLengthError) return new VerifyJobError("INVALID_ARGUMENT", error.message);
  return new VerifyJobError("UNAVAILABLE", `batched forward failed: ${(error as Error).message ?? String(error)}`);
}

export class VerifyRound {
  readonly #observers: BatchObserver[] = [];

  constructor(
    readonly cache: SequenceCache,
    readonly replicaId: string,
    readonly modelName: string = cache.model.info.name,
    readonly selfDrafts: SelfDrafts = new SelfDrafts([]),
  ) {
    cache.onRelease((sequenceId) => selfDrafts.release(sequenceId));
  }

  observe(observer: BatchObserver): void {
    this.#observers.push(observer);
  }

  /** Verifies the jobs (distinct sequences) in one batched forward; never rejects, every job gets an outcome. */
  async verify(jobs: readonly VerifyJob__Output[]): Promise<VerifyOutcome[]> {
    const ends = this.#observers.map((observer) => observer(jobs));
    const startedAtUnixMs = nowUnixMs();
    const started = performance.now();
    const outcomes = new Array<VerifyOutcome>(jobs.length);
    let admitted: Admitted[] = [];
    const seen = new Set<string>();
    jobs.forEach((job, index) => {
      try {
        checkAdmission(job, this.modelName, startedAtUnixMs);
        const round = toEngineJob(job, this.cache.model.info);
        if (seen.has(job.sequence_id)) {
          throw new VerifyJobError("UNAVAILABLE", `sequence "${job.sequence_id}" has two jobs in one batch; retry`);
        }
        seen.add(job.sequence_id);
        admitted.push({ index, job, round, reprefilled: false, positions: 0 });
      } catch (error) {
        outcomes[index] = error instanceof VerifyJobError ? error : forwardFailure(error);
      }
    });

    const historyNeeded = admitted.filter((a) => !this.#prepare(a));
    for (const a of historyNeeded) {
      const { sequence_id, round } = a.job;
      outcomes[a.index] = { sequence_id, round, replica_id: this.replicaId, history_needed: true };
    }
    if (historyNeeded.length > 0) admitted = admitted.filter((a) => !historyNeeded.includes(a));
    admitted = admitted.filter((a) => {
      try {
        this.#planSelfDraft(a);
        return true;
      } catch (error) {
        // A drafter refusing its settings (the gateway checks them first) is the job's fault, not the replica's.
        outcomes[a.index] =
          error instanceof VerifyJobError
            ? error
            : error instanceof RangeError
              ? new VerifyJobError("INVALID_ARGUMENT", `self-draft: ${error.message}`)
              : forwardFailure(error);
        return false;
      }
    });
    let evicted = 0;
    if (admitted.length > 0) {
      const bytes = admitted.reduce((sum, a) => sum + a.positions, 0) * this.cache.model.info.kvBytesPerToken;
      evicted = this.cache.makeRoom(bytes, seen).length;
      await this.#run(admitted, outcomes, started);
    }

    const report: BatchReport = {
      jobs,
      outcomes,
      size: admitted.length,
      startedAtUnixMs,
      durationMs: performance.now() - started,
      positions: admitted.reduce((sum, a) => sum + a.positions, 0),
      reprefills: admitted.filter((a) => a.reprefilled).length,
      historyNeeded: historyNeeded.length,
      evicted,
    };
    for (const end of ends) end?.(report);
    return outcomes;
  }

  /**
   * Brings the sequence's cache to what the job builds on and counts the positions to score; false when the job names
   * a held prefix the cache does not hold.
   */
  #prepare(a: Admitted): boolean {
    const { job } = a;
    const held = heldPrefixOf(job);
    if (held !== undefined && !this.cache.holds(job.sequence_id, held)) return false;
    const length = historyLength(job);
    const kept = held?.length ?? this.cache.prepare(job.sequence_id, job.history);
    a.positions = length - kept + draftSize(job);
    a.reprefilled = job.round > 1 && kept < length - 1;
    return true;
  }

  /** A self-drafted job's tree, drafted here from the sequence's state (VerifyJob.self_draft). */
  #planSelfDraft(a: Admitted): void {
    const ask = a.job.self_draft;
    if (!ask || ask.drafter === "") return;
    if (draftSize(a.job) > 0) {
      throw new VerifyJobError(
        "INVALID_ARGUMENT",
        `job for sequence "${a.job.sequence_id}" carries a draft and asks for a self-draft`,
      );
    }
    const started = performance.now();
    const held = a.round.committedOffset > 0 ? (this.cache.tokens(a.job.sequence_id) ?? []) : [];
    const history = held.concat(a.job.history);
    const room = this.cache.model.info.contextLength - history.length;
    const planned = this.selfDrafts.plan(a.job.sequence_id, ask, history, room, a.round.sampling, a.round.seed);
    const { tree, lookahead = [] } = planned.round;
    const window = branchSize(lookahead);
    if (tree.tokens.length > 0 || window > 0) {
      a.round = { ...a.round, draftTree: tree, ...(window > 0 && { lookahead }) };
    }
    a.positions += tree.tokens.length + window;
    a.selfDraft = { planned, history, ms: performance.now() - started };
  }

  async #run(admitted: readonly Admitted[], outcomes: VerifyOutcome[], started: number): Promise<void> {
    try {
      const verdicts = await verifyOnTarget(
        this.cache.model,
        admitted.map((a) => a.round),
      );
      const verifyTimeMs = performance.now() - started;
      admitted.forEach((a, i) => {
        const verdict = verdicts[i];
        const { accepted, token } = verdict;
        const { job, round } = a;
        const path = "path" in verdict ? verdict.path : undefined;
        const tree = round.draftTree;
        const kept = tree && path ? pathTokens(tree, path) : job.draft_tokens.slice(0, accepted);
        // The cache record the round extends: its held prefix, or nothing (a full history).
        this.cache.commit(job.sequence_id, round.committedOffset, job.history.concat(kept));
        const { selfDraft } = a;
        if (selfDraft) {
          const settling = performance.now();
          selfDraft.planned.state.settle(selfDraft.planned.round, verdict, selfDraft.history.concat(kept, [token]));
          selfDraft.ms += performance.now() - settling;
        }
        outcomes[a.index] = {
          sequence_id: job.sequence_id,
          round: job.round,
          accepted,
          next_token: token,
          bonus: tree && path ? children(tree, path.at(-1) ?? ROOT).length === 0 : accepted === job.draft_tokens.length,
          path: path ? [...path] : [],
          replica_id: this.replicaId,
          batch_size: admitted.length,
          queue_wait_ms:
            job.enqueued_at_unix_ms > 0 ? Math.max(0, performance.timeOrigin + started - job.enqueued_at_unix_ms) : 0,
          verify_time_ms: verifyTimeMs,
          reprefilled: a.reprefilled,
          positions: a.positions,
          ...(a.selfDraft && {
            draft_tree: encodeTree(a.selfDraft.planned.round.tree),
            draft_time_ms: a.selfDraft.ms,
          }),
        };
      });
    } catch (error) {
      // A half-run batch leaves caches in no known state: drop them (the retry re-prefills from its history).
      this.cache.release(admitted.map((a) => a.job.sequence_id));
      const failure = forwardFailure(error);
      for (const a of admitted) outcomes[a.index] = failure;
    }
  }
}
