/**
 * The in-process round loop: draft → verify K+1 positions in one target forward → accept → trim the target cache and
 * roll the drafter back, until a stop condition. Without speculation (or at K = 0) each round is one step of plain
 * target decoding. The distributed gateway runs the same pieces (sequence.ts, k-policy.ts, stats.ts) with the draft
 * and the verification (target-verifier.ts) in other processes.
 */
import type { CausalLM } from "../runtime/causal-lm.ts";
import type { Tokenizer } from "../runtime/tokenizer/tokenizer.ts";
import type { Draft, Drafter } from "./drafter.ts";
import { CostModel, createKPolicy, type KPolicyConfig } from "./k-policy.ts";
import { randomSeed } from "./rng.ts";
import { GREEDY, type SamplingParams } from "./sampling.ts";
import { type FinishReason, SequenceState } from "./sequence.ts";
import { emptyStats, type RequestStats, recordRound } from "./stats.ts";
import { prefillTarget, verifyOnTarget } from "./target-verifier.ts";
import { type AcceptanceMode, LOSSLESS } from "./verify.ts";

export interface Speculation {
  readonly drafter: Drafter;
  readonly k: KPolicyConfig;
  /** Default lossless. */
  readonly acceptance?: AcceptanceMode;
  /** Measured costs shared by the requests of one drafter/target pair (adaptive K); a fresh model when absent. */
  readonly costs?: CostModel;
}

export interface GenerateOptions {
  readonly maxNewTokens: number;
  /** Default greedy. */
  readonly sampling?: SamplingParams;
  /** Stop after this token; default the target's EOS, null to never stop at EOS. */
  readonly eosTokenId?: number | null;
  readonly stopStrings?: readonly string[];
  /** Decodes the text (needed for stop strings; also fills `text`). */
  readonly tokenizer?: Pick<Tokenizer, "decode">;
  /** Absent: target-only decoding. */
  readonly speculation?: Speculation;
  /** Cache id to use in the target and the drafter (released at the end); default a fresh one. */
  readonly sequenceId?: string;
}

export interface GenerationResult {
  /** Generated ids (prompt excluded; EOS included when it ended generation). */
  readonly tokens: number[];
  /** Generated text, without a matched stop string ("" without a tokenizer). */
  readonly text: string;
  readonly finishReason: FinishReason;
  /** The seed the request's draws were keyed by (reported so a sampled run can be reproduced). */
  readonly seed: number;
  readonly stats: RequestStats;
}

const NO_DRAFT: Draft = { tokens: [] };
let nextSequence = 0;

export async function generate(
  target: CausalLM,
  prompt: readonly number[],
  options: GenerateOptions,
): Promise<GenerationResult> {
  const sampling = options.sampling ?? GREEDY;
  const seed = sampling.seed ?? randomSeed();
  const sequenceId = options.sequenceId ?? `generate-${process.pid}-${nextSequence++}`;
  const eos = options.eosTokenId === undefined ? target.info.eosTokenId : (options.eosTokenId ?? undefined);
  const sequence = new SequenceState(
    prompt,
    {
      maxNewTokens: options.maxNewTokens,
      contextLength: target.info.contextLength,
      eosTokenId: eos,
      stopStrings: options.stopStrings,
    },
    options.tokenizer,
  );
  const spec = options.speculation;
  const drafter = spec?.drafter;
  const costs = spec?.costs ?? new CostModel();
  const policy = createKPolicy(spec?.k ?? { kind: "fixed", k: 0 }, costs);
  const acceptance = spec?.acceptance ?? LOSSLESS;
  const stats = emptyStats();
  try {
    let started = performance.now();
    await Promise.all([
      prefillTarget(target, sequenceId, prompt),
      drafter?.open({ sequenceId, history: prompt, sampling, seed }),
    ]);
    stats.prefill_time_ms = performance.now() - started;
    while (!sequence.finished) {
      const historyLength = sequence.tokens.length;
      const k = drafter ? Math.min(policy.nextK(), sequence.draftBudget()) : 0;
      started = performance.now();
      const draft = drafter && k > 0 ? (await drafter.propose([{ sequenceId, k }]))[0] : NO_DRAFT;
      const drafted = performance.now();
      const [verdict] = await verifyOnTarget(target, [
        {
          sequenceId,
          committed: sequence.tokens,
          committedOffset: 0,
          draftTokens: draft.tokens,
          draftDistributions: draft.distributions,
          sampling,
          acceptance,
          seed,
        },
      ]);
      const verified = performance.now();
      const committed = sequence.commit([...draft.tokens.slice(0, verdict.accepted), verdict.token]);
      if (drafter && !sequence.finished) drafter.commit(sequenceId, historyLength + verdict.accepted, [verdict.token]);
      const draftMs = drafted - started + (performance.now() - verified);
      const verifyMs = verified - drafted;
      if (draft.tokens.length > 0) costs.recordDraft(draftMs, draft.tokens.length);
      costs.recordVerify(draft.tokens.length + 1, verifyMs);
      policy.observe(draft.tokens.length, verdict.accepted);
      recordRound(stats, {
        k,
        proposed: draft.tokens.length,
        accepted: verdict.accepted,
        emitted: committed.tokens.length,
        draftMs,
        verifyMs,
      });
    }
  } finally {
    target.release(sequenceId);
    drafter?.close(sequenceId);
  }
  return {
    tokens: sequence.generated,
    text: sequence.text,
    finishReason: sequence.finishReason as FinishReason,
    seed,
    stats,
  };
}
