/**
 * A verify job as it comes off the queue (target.proto VerifyJob) turned into the engine's round to verify, with every
 * check that concerns one job alone, so that one bad job fails by itself instead of failing the batch it would join.
 */
import { basename } from "node:path";
import type { VerifyJob__Output } from "../../gen/specgate/v1/VerifyJob.ts";
import { fromWire } from "../../proto/draft-distribution.ts";
import { seededSamplingFromWire } from "../../proto/sampling-params.ts";
import type { SparseDistribution } from "../engine/sampling.ts";
import type { VerifyJob as EngineVerifyJob } from "../engine/target-verifier.ts";
import { decodeTree, type TokenTree } from "../engine/token-tree.ts";
import type { AcceptanceMode } from "../engine/verify.ts";
import { type PrefixHash, fromWire as prefixFromWire } from "../replica-link/held-prefix.ts";
import { VerifyJobError } from "../replica-link/verify-errors.ts";
import type { ModelInfo } from "../runtime/causal-lm.ts";

/** What a zero in RelaxedAcceptance stands for (Medusa's typical-acceptance defaults: epsilon 0.09, delta 0.3). */
export const RELAXED_DEFAULTS = { topK: 3, epsilon: 0.09, delta: 0.3 } as const;

function invalid(job: VerifyJob__Output, detail: string): VerifyJobError {
  return new VerifyJobError("INVALID_ARGUMENT", `job for sequence "${job.sequence_id}" round ${job.round}: ${detail}`);
}

function acceptanceOf(job: VerifyJob__Output): AcceptanceMode {
  const relaxed = job.relaxed;
  switch (job.acceptance) {
    case "ACCEPTANCE_MODE_UNSPECIFIED":
    case "ACCEPTANCE_MODE_LOSSLESS":
      return { kind: "lossless" };
    case "ACCEPTANCE_MODE_LOSSY_TOP_K":
      return { kind: "top-k", k: relaxed?.top_k || RELAXED_DEFAULTS.topK };
    case "ACCEPTANCE_MODE_LOSSY_TYPICAL":
      return {
        kind: "typical",
        epsilon: relaxed?.epsilon || RELAXED_DEFAULTS.epsilon,
        delta: relaxed?.delta || RELAXED_DEFAULTS.delta,
      };
    default:
      throw invalid(job, `unknown acceptance mode ${String(job.acceptance)}`);
  }
}

function checkTokens(job: VerifyJob__Output, what: string, tokens: readonly number[], vocabSize: number): void {
  const bad = tokens.find((t) => !(Number.isInteger(t) && t >= 0 && t < vocabSize));
  if (bad !== undefined) throw invalid(job, `${what} token ${bad} is outside the vocabulary [0, ${vocabSize})`);
}

/** Draft positions the job asks to verify: its draft tokens, or its tree's nodes. */
export function draftSize(job: VerifyJob__Output): number {
  return job.draft_tokens.length + (job.draft_tree?.tokens.length ?? 0);
}

/** The prefix the job says the replica's cache holds (its history follows it), or undefined: a full history. */
export function heldPrefixOf(job: VerifyJob__Output): PrefixHash | undefined {
  return job.held_prefix && job.held_prefix.length > 0 ? prefixFromWire(job.held_prefix) : undefined;
}

/** Tokens of the sequence before the job's draft: its held prefix and the history it carries. */
export function historyLength(job: VerifyJob__Output): number {
  return (heldPrefixOf(job)?.length ?? 0) + job.history.length;
}

/** The engine's round for `job`, or a VerifyJobError saying what is wrong with the job. */
export function toEngineJob(
  job: VerifyJob__Output,
  model: Pick<ModelInfo, "vocabSize" | "contextLength">,
): EngineVerifyJob {
  if (job.sequence_id.length === 0) throw invalid(job, "sequence_id is empty");
  if (job.history.length === 0)
    throw invalid(job, "history is empty (it holds at least the prompt, or a token after the held prefix)");
  checkTokens(job, "history", job.history, model.vocabSize);
  checkTokens(job, "draft", job.draft_tokens, model.vocabSize);
  let sampling: ReturnType<typeof seededSamplingFromWire>;
  try {
    sampling = seededSamplingFromWire(job.sampling);
  } catch (error) {
    throw invalid(job, (error as Error).message);
  }
  const acceptance = acceptanceOf(job);
  const draftTree = treeOf(job, sampling.temperature > 0, acceptance, model.vocabSize);
  const length = historyLength(job) + (draftTree?.tokens.length ?? job.draft_tokens.length);
  if (length > model.contextLength) {
    throw invalid(job, `history + draft is ${length} tokens, over the context length of ${model.contextLength}`);
  }
  let draftDistributions: SparseDistribution[] | undefined;
  if (sampling.temperature > 0 && acceptance.kind === "lossless") {
    if (job.draft_distributions.length !== job.draft_tokens.length) {
      throw invalid(
        job,
        `lossless sampling needs one draft distribution per draft token (${job.draft_tokens.length}), got ${job.draft_distributions.length}`,
      );
    }
    draftDistributions = distributionsOf(job, job.draft_distributions);
  }
  return {
    sequenceId: job.sequence_id,
    committed: job.history,
    committedOffset: heldPrefixOf(job)?.length ?? 0,
    draftTokens: job.draft_tokens,
    draftDistributions,
    ...(draftTree && { draftTree }),
    sampling,
    acceptance,
    seed: sampling.seed,
  };
}

function distributionsOf(job: VerifyJob__Output, wire: VerifyJob__Output["draft_distributions"]): SparseDistribution[] {
  try {
    return wire.map(fromWire);
  } catch (error) {
    throw invalid(job, (error as Error).message);
  }
}

/** The job's token tree, checked; undefined for a chain job (no tree, or an empty one). */
function treeOf(
  job: VerifyJob__Output,
  sampling: boolean,
  acceptance: AcceptanceMode,
  vocabSize: number,
): TokenTree | undefined {
  const wire = job.draft_tree;
  if (!wire || wire.tokens.length === 0) return undefined;
  if (job.draft_tokens.length > 0) throw invalid(job, "draft_tree and draft_tokens are both set");
  if (acceptance.kind !== "lossless") throw invalid(job, "a draft_tree is verified with lossless acceptance only");
  checkTokens(job, "draft_tree", wire.tokens, vocabSize);
  // Without distributions the nodes count as deterministic drafts (q = 1 on each token), which stays exact.
  const distributions =
    sampling && wire.distributions.length > 0 ? distributionsOf(job, wire.distributions) : undefined;
  try {
    return decodeTree(wire, distributions);
  } catch (error) {
    throw invalid(job, (error as Error).message);
  }
}

/**
 * Whether the replica may take the job at all: right model (its name, or a path ending in it; empty: any), deadline
 * not passed.
 */
export function checkAdmission(job: VerifyJob__Output, modelName: string, nowUnixMs: number): void {
  if (job.model !== "" && basename(job.model) !== modelName) {
    throw new VerifyJobError(
      "FAILED_PRECONDITION",
      `job for sequence "${job.sequence_id}" asks for model "${job.model}", this replica serves "${modelName}"`,
    );
  }
  if (job.deadline_unix_ms > 0 && nowUnixMs > job.deadline_unix_ms) {
    throw new VerifyJobError(
      "DEADLINE_EXCEEDED",
      `job for sequence "${job.sequence_id}" round ${job.round} passed its deadline ${(nowUnixMs - job.deadline_unix_ms).toFixed(1)} ms ago`,
    );
  }
}
