/**
 * The in-process round loop: draft → verify K+1 positions in one target forward → accept → trim the target cache and
 * roll the drafter back, until a stop condition. With trees on, a round drafts a token tree K deep, the target scores
 * the root and every node in one forward, and both caches are compacted to the accepted path. Without speculation (or at K = 0) each round is one step of plain
 * target decoding. Many requests advance together (one batched draft step per drafter, one batched verify forward per
 * round), as in the services. The distributed gateway drives the same round step (round.ts) with the draft and the
 * verification (target-verifier.ts) in other processes.
 */
import type { CausalLM } from "../runtime/causal-lm.ts";
import type { Tokenizer } from "../runtime/tokenizer/tokenizer.ts";
import { type Draft, type Drafter, isTreeDrafter, type TreeDrafter } from "./drafter.ts";
import { CostModel, chainWork, createKPolicy, DEFAULT_K_POLICY, type KPolicyConfig } from "./k-policy.ts";
import { type LookaheadConfig, type LookaheadPlan, LookaheadSequence, type LookaheadSwitch } from "./lookahead.ts";
import { randomSeed } from "./rng.ts";
import { type RoundPlan, SpeculativeSequence } from "./round.ts";
import { GREEDY, type SamplingParams } from "./sampling.ts";
import { type FinishReason, SequenceState } from "./sequence.ts";
import type { RequestStats } from "./stats.ts";
import { type LookaheadVerdict, prefillTarget, verifyOnTarget } from "./target-verifier.ts";
import type { TokenTree } from "./token-tree.ts";
import { type Branching, FixedTreeShape, type TreeShaper, treeWork } from "./tree-policy.ts";
import { type AcceptanceMode, LOSSLESS } from "./verify.ts";

export interface Speculation {
  readonly drafter: Drafter;
  /** Default DEFAULT_K_POLICY (adaptive). */
  readonly k?: KPolicyConfig;
  /** Default lossless. */
  readonly acceptance?: AcceptanceMode;
  /** Measured costs shared by the requests of one drafter/target pair (adaptive K); a fresh model when absent. */
  readonly costs?: CostModel;
  /**
   * Draft token trees K deep instead of chains (the drafter must be a TreeDrafter; lossless acceptance only): always
   * this branching, or each round's from a shape policy shared by the pair's requests (tree-policy.ts).
   */
  readonly tree?: Branching | TreeShaper;
}

export interface Lookahead {
  readonly config: LookaheadConfig;
  /**
   * Runs rounds as plain decoding where Lookahead does not pay, by measured ms per token; shared by the requests of
   * one target. Absent: Lookahead in every round.
   */
  readonly switch?: LookaheadSwitch;
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
  /** Absent (and no `lookahead`): target-only decoding. */
  readonly speculation?: Speculation;
  /** Lookahead decoding (lookahead.ts): the target drafts for itself, without a drafter; not with `speculation`. */
  readonly lookahead?: Lookahead;
  /** Cache id to use in the target and the drafter (released at the end); default a fresh one. */
  readonly sequenceId?: string;
}

export interface GenerationRequest extends GenerateOptions {
  readonly prompt: readonly number[];
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

/** One request in flight. */
interface Active {
  readonly sequenceId: string;
  readonly speculation: SpeculativeSequence;
  readonly sampling: SamplingParams;
  readonly seed: number;
  readonly drafter: Drafter | undefined;
  readonly acceptance: AcceptanceMode;
  readonly costs: CostModel;
  readonly treeDrafter: TreeDrafter | undefined;
  readonly lookahead: { readonly sequence: LookaheadSequence; readonly switch?: LookaheadSwitch } | undefined;
  /** This round's Lookahead plan (lookahead rounds only). */
  lookaheadPlan: LookaheadPlan | undefined;
  plan: RoundPlan;
  draft: Draft;
  /** Tokens the last round added. */
  emitted: number;
  /** This round's tree (tree rounds only). */
  drafted: TokenTree | undefined;
}

const NO_DRAFT: Draft = { tokens: [] };
const UNPLANNED: RoundPlan = { round: 0, k: 0 };
let nextSequence = 0;

function start(target: CausalLM, request: GenerationRequest): Active {
  const sampling = request.sampling ?? GREEDY;
  const eos = request.eosTokenId === undefined ? target.info.eosTokenId : (request.eosTokenId ?? undefined);
  const spec = request.speculation;
  const costs = spec?.costs ?? new CostModel();
  const sequenceId = request.sequenceId ?? `generate-${process.pid}-${nextSequence++}`;
  const drafter = spec?.drafter;
  if (spec && request.lookahead) throw new TypeError("lookahead decoding drafts for itself: it takes no speculation");
  const lookahead = request.lookahead && {
    sequence: new LookaheadSequence(request.lookahead.config, request.prompt),
    switch: request.lookahead.switch,
  };
  if (spec?.tree) {
    if (!isTreeDrafter(spec.drafter)) throw new TypeError(`drafter ${spec.drafter.name} does not draft trees`);
    if ((spec.acceptance ?? LOSSLESS).kind !== "lossless") throw new TypeError("trees are verified losslessly only");
  }
  const shaper = spec?.tree && ("choose" in spec.tree ? spec.tree : new FixedTreeShape(spec.tree));
  const treeDrafter = shaper && spec && isTreeDrafter(spec.drafter) ? spec.drafter : undefined;
  const sequence = new SequenceState(
    request.prompt,
    {
      maxNewTokens: request.maxNewTokens,
      contextLength: target.info.contextLength,
      eosTokenId: eos,
      stopStrings: request.stopStrings,
    },
    request.tokenizer,
  );
  return {
    sequenceId,
    speculation: new SpeculativeSequence(
      sequence,
      createKPolicy(
        lookahead
          ? { kind: "fixed", k: lookahead.sequence.config.ngram - 1 }
          : spec
            ? (spec.k ?? DEFAULT_K_POLICY)
            : { kind: "fixed", k: 0 },
        costs,
      ),
      // Lookahead's state is settled from the forward's outputs (`lookahead.settle`), not rolled back.
      lookahead
        ? { rollBack: () => undefined }
        : drafter && {
            rollBack: (outcome) =>
              outcome.path && treeDrafter
                ? treeDrafter.commitPath(sequenceId, outcome.path, outcome.token)
                : drafter.commit(sequenceId, outcome.historyLength + outcome.accepted, [outcome.token]),
          },
      shaper,
    ),
    sampling,
    seed: sampling.seed ?? randomSeed(),
    drafter,
    acceptance: spec?.acceptance ?? LOSSLESS,
    costs,
    treeDrafter,
    lookahead,
    lookaheadPlan: undefined,
    plan: UNPLANNED,
    draft: NO_DRAFT,
    emitted: 0,
    drafted: undefined,
  };
}

/** Asks each drafter for the proposals (chains or trees) of its sequences, one batched call per drafter and kind. */
async function draftAll(target: CausalLM, active: readonly Active[]): Promise<void> {
  const chains = new Map<Drafter, Active[]>();
  const trees = new Map<TreeDrafter, Active[]>();
  for (const a of active) {
    a.draft = NO_DRAFT;
    a.drafted = undefined;
    if (!a.drafter || a.plan.k === 0) continue;
    const groups: Map<Drafter, Active[]> = a.plan.branching ? trees : chains;
    const group = groups.get(a.drafter);
    if (group) group.push(a);
    else groups.set(a.drafter, [a]);
  }
  await Promise.all([
    ...[...chains].map(async ([drafter, group]) => {
      const drafts = await drafter.propose(group.map((a) => ({ sequenceId: a.sequenceId, k: a.plan.k })));
      group.forEach((a, i) => {
        a.draft = drafts[i];
      });
    }),
    ...[...trees].map(async ([drafter, group]) => {
      const drafts = await drafter.proposeTrees(
        group.map((a) => {
          const { width, nodes } = a.plan.branching ?? { width: 0, nodes: 0 };
          // The target caches the history and every node: keep them inside its context.
          const room = target.info.contextLength - a.speculation.sequence.tokens.length - 1;
          return { sequenceId: a.sequenceId, shape: { depth: a.plan.k, width, nodes: Math.min(nodes, room) } };
        }),
      );
      group.forEach((a, i) => {
        a.drafted = drafts[i];
      });
    }),
  ]);
}

/** A Lookahead round's candidates and window, within the room the target's context leaves. */
function planLookahead(target: CausalLM, a: Active): void {
  a.lookaheadPlan = undefined;
  if (!a.lookahead || a.plan.k === 0) return;
  const history = a.speculation.sequence.tokens;
  a.lookaheadPlan = a.lookahead.sequence.plan(
    history[history.length - 1],
    a.plan.k,
    target.info.contextLength - history.length,
  );
  a.drafted = a.lookaheadPlan.tree;
}

/** Generates for many requests at once; results in request order. */
export async function generateBatch(
  target: CausalLM,
  requests: readonly GenerationRequest[],
): Promise<GenerationResult[]> {
  const all = requests.map((r) => start(target, r));
  try {
    let started = performance.now();
    await Promise.all([
      prefillTarget(
        target,
        all.map((a) => ({ sequenceId: a.sequenceId, history: a.speculation.sequence.tokens })),
      ),
      ...all.map((a) =>
        a.drafter?.open({
          sequenceId: a.sequenceId,
          history: a.speculation.sequence.tokens,
          sampling: a.sampling,
          seed: a.seed,
        }),
      ),
    ]);
    const prefillMs = performance.now() - started;
    for (const a of all) a.speculation.stats.prefill_time_ms = prefillMs;
    for (;;) {
      const active = all.filter((a) => !a.speculation.sequence.finished);
      if (active.length === 0) break;
      for (const a of active) a.plan = a.speculation.plan();
      // One Lookahead choice per switch and round, so that a round's time measures it; off, the round is one step of
      // plain decoding.
      const switches = new Map<LookaheadSwitch, boolean>();
      for (const a of active) {
        const lookaheadSwitch = a.lookahead?.switch;
        if (!lookaheadSwitch) continue;
        if (!switches.has(lookaheadSwitch)) switches.set(lookaheadSwitch, lookaheadSwitch.on());
        if (!switches.get(lookaheadSwitch)) a.plan = { ...a.plan, k: 0 };
      }
      started = performance.now();
      await draftAll(target, active);
      for (const a of active) planLookahead(target, a);
      const drafted = performance.now();
      const verdicts = await verifyOnTarget(
        target,
        active.map((a) => ({
          sequenceId: a.sequenceId,
          committed: a.speculation.sequence.tokens,
          committedOffset: 0,
          draftTokens: a.draft.tokens,
          draftDistributions: a.draft.distributions,
          draftTree: a.drafted,
          lookahead: a.lookaheadPlan?.window,
          sampling: a.sampling,
          acceptance: a.acceptance,
          seed: a.seed,
        })),
      );
      const verified = performance.now();
      active.forEach((a, i) => {
        const outcome = a.speculation.accept(a.plan, a.drafted ? { tree: a.drafted } : a.draft, verdicts[i]);
        a.speculation.rollBack(outcome);
        if (a.lookaheadPlan && !a.speculation.sequence.finished) {
          a.lookahead?.sequence.settle(
            a.lookaheadPlan,
            (verdicts[i] as LookaheadVerdict).branchLogits,
            target.info.vocabSize,
            a.speculation.sequence.tokens,
            outcome.committed.tokens.length,
          );
        }
        a.speculation.record(outcome, drafted - started, verified - drafted);
        a.emitted = outcome.committed.tokens.length;
      });
      // Costs per round as the policies see them: drafter commits are bookkeeping and count with drafting. The batch's
      // largest draft and tree set its cost.
      const draftMs = drafted - started + (performance.now() - verified);
      for (const costs of new Set(active.map((a) => a.costs))) {
        const work = active.map((a) => (a.drafted ? treeWork(a.drafted) : chainWork(a.draft.tokens.length)));
        costs.recordRound(
          {
            draftForwards: Math.max(...work.map((w) => w.draftForwards)),
            draftPositions: Math.max(...work.map((w) => w.draftPositions)),
            positions: Math.max(...work.map((w) => w.positions)),
          },
          draftMs,
          verified - drafted,
        );
      }
      for (const [lookaheadSwitch, on] of switches) {
        const mine = active.filter((a) => a.lookahead?.switch === lookaheadSwitch);
        const tokens = mine.reduce((n, a) => n + a.emitted, 0);
        lookaheadSwitch.observe(on, tokens / mine.length, draftMs + verified - drafted);
      }
    }
  } finally {
    for (const a of all) {
      target.release(a.sequenceId);
      a.drafter?.close(a.sequenceId);
    }
  }
  return all.map(({ speculation: { sequence, stats }, seed }) => ({
    tokens: sequence.generated,
    text: sequence.text,
    finishReason: sequence.finishReason as FinishReason,
    seed,
    stats,
  }));
}

/** Generates for one request. */
export async function generate(
  target: CausalLM,
  prompt: readonly number[],
  options: GenerateOptions,
): Promise<GenerationResult> {
  const [result] = await generateBatch(target, [{ ...options, prompt }]);
  return result;
}
