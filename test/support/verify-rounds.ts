/**
 * A gateway's round loop reduced to what the target sees, for target tests: sequences draft with real drafters, each
 * round's VerifyJob is verified by the path under test (a VerifyRound, a replica through its queue, ...) and, side by
 * side, by the engine's in-process verifier on a reference model with its own caches. Both verdicts are recorded; the
 * distributed one is committed, so a divergence shows up at the round where it happens.
 */
import type { SamplingParams as WireSampling } from "../../gen/specgate/v1/SamplingParams.ts";
import type { VerifyJob } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../../gen/specgate/v1/VerifyResult.ts";
import { quantise, toWire } from "../../proto/draft-distribution.ts";
import { type Draft, type Drafter, isTreeDrafter } from "../../services/engine/drafter.ts";
import type { SamplingParams } from "../../services/engine/sampling.ts";
import { verifyOnTarget } from "../../services/engine/target-verifier.ts";
import { encodeTree, pathTokens, type TokenTree } from "../../services/engine/token-tree.ts";
import type { Branching } from "../../services/engine/tree-policy.ts";
import type { CausalLM } from "../../services/runtime/causal-lm.ts";

export interface ScriptedSequence {
  readonly sequenceId: string;
  readonly prompt: readonly number[];
  /** Greedy when temperature is 0; seed always set. */
  readonly sampling: { temperature: number; topK?: number; topP?: number; seed: number };
  readonly drafter: Drafter;
  readonly k: number;
  /** Draft token trees K deep of this branching instead of chains (the drafter must draft trees). */
  readonly tree?: Branching;
}

export interface RoundPair {
  readonly sequenceId: string;
  readonly round: number;
  /** `path`: a tree round's accepted nodes ([] for chains). */
  readonly distributed: { accepted: number; token: number; path: number[] };
  readonly inProcess: { accepted: number; token: number; path: number[] };
  readonly result: VerifyResult__Output;
}

export type VerifyPath = (jobs: VerifyJob[]) => Promise<VerifyResult__Output[]>;

function wireSampling(s: ScriptedSequence["sampling"]): WireSampling {
  return {
    temperature: s.temperature,
    top_k: s.topK ?? 0,
    ...(s.topP !== undefined ? { top_p: s.topP } : {}),
    seed: s.seed,
  };
}

/** A drafter option that makes model drafters sample from the quantised q that travels on the wire. */
export const WIRE_QUANTISED = { quantise };

const NO_DRAFT: Draft = { tokens: [] };

/** A sequence's proposal for the round: a chain, or a tree when the sequence drafts trees. */
async function propose(s: ScriptedSequence): Promise<{ draft: Draft; tree?: TokenTree }> {
  if (!s.tree) return { draft: (await s.drafter.propose([{ sequenceId: s.sequenceId, k: s.k }]))[0] };
  if (!isTreeDrafter(s.drafter)) throw new TypeError(`drafter ${s.drafter.name} does not draft trees`);
  const [tree] = await s.drafter.proposeTrees([{ sequenceId: s.sequenceId, shape: { depth: s.k, ...s.tree } }]);
  return { draft: NO_DRAFT, tree };
}

/**
 * Runs `rounds` rounds of every sequence, all sequences' jobs of a round handed to `path` together. `reference` is
 * the in-process target (its caches are named after the sequences and released at the end).
 */
export async function runScriptedRounds(
  reference: CausalLM,
  sequences: readonly ScriptedSequence[],
  rounds: number,
  path: VerifyPath,
  model = "",
): Promise<RoundPair[]> {
  const histories = new Map(sequences.map((s) => [s.sequenceId, [...s.prompt]]));
  const pairs: RoundPair[] = [];
  for (const s of sequences) {
    const sampling: SamplingParams = {
      temperature: s.sampling.temperature,
      topK: s.sampling.topK,
      topP: s.sampling.topP,
      seed: s.sampling.seed,
    };
    await s.drafter.open({ sequenceId: s.sequenceId, history: s.prompt, sampling, seed: s.sampling.seed });
  }
  try {
    for (let round = 1; round <= rounds; round++) {
      const drafts = await Promise.all(sequences.map((s) => propose(s)));
      const jobs: VerifyJob[] = sequences.map((s, i) => {
        const { draft, tree } = drafts[i];
        return {
          sequence_id: s.sequenceId,
          request_id: `request-${s.sequenceId}`,
          round,
          history: histories.get(s.sequenceId),
          draft_tokens: draft.tokens,
          draft_distributions: (draft.distributions ?? []).map((q) => toWire(quantise(q))),
          ...(tree && {
            draft_tree: {
              ...encodeTree(tree),
              distributions: (tree.distributions ?? []).map((q) => toWire(quantise(q))),
            },
          }),
          sampling: wireSampling(s.sampling),
          model,
        };
      });
      const results = await path(jobs);
      for (const [i, s] of sequences.entries()) {
        const history = histories.get(s.sequenceId) as number[];
        const { draft, tree } = drafts[i];
        const [inProcess] = await verifyOnTarget(reference, [
          {
            sequenceId: s.sequenceId,
            committed: history,
            committedOffset: 0,
            draftTokens: draft.tokens,
            draftDistributions: draft.distributions?.map(quantise),
            ...(tree && {
              draftTree: tree.distributions ? { ...tree, distributions: tree.distributions.map(quantise) } : tree,
            }),
            sampling: {
              temperature: s.sampling.temperature,
              topK: s.sampling.topK,
              topP: s.sampling.topP,
              seed: s.sampling.seed,
            },
            acceptance: { kind: "lossless" },
            seed: s.sampling.seed,
          },
        ]);
        const result = results[i];
        pairs.push({
          sequenceId: s.sequenceId,
          round,
          distributed: { accepted: result.accepted, token: result.next_token, path: result.path },
          inProcess: {
            accepted: inProcess.accepted,
            token: inProcess.token,
            path: "path" in inProcess ? [...inProcess.path] : [],
          },
          result,
        });
        if (tree && isTreeDrafter(s.drafter)) {
          history.push(...pathTokens(tree, result.path), result.next_token);
          s.drafter.commitPath(s.sequenceId, result.path, result.next_token);
          continue;
        }
        const length = history.length + result.accepted;
        history.push(...draft.tokens.slice(0, result.accepted), result.next_token);
        s.drafter.commit(s.sequenceId, length, [result.next_token]);
      }
    }
  } finally {
    for (const s of sequences) {
      s.drafter.close(s.sequenceId);
      reference.release(s.sequenceId);
    }
  }
  return pairs;
}
