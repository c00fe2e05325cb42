/**
 * A replica's self-drafting (VerifyJob.self_draft): each sequence's drafting state, kept beside its KV cache and
 * released with it. The state plans a job's tree before the batched forward and settles from that forward's outputs
 * after it. A state that does not stand on the job's history (a new sequence, a restart, a re-route, a round sent
 * again) is opened afresh from that history, so a round may come out shorter on another replica, never different.
 */
import type { SelfDraft__Output } from "../../gen/specgate/v1/SelfDraft.ts";
import type { SamplingParams } from "../engine/sampling.ts";
import type { SelfDraftAsk, SelfDrafter, SelfDraftRound, SelfDraftState } from "../engine/self-drafter.ts";
import { VerifyJobError } from "../replica-link/verify-errors.ts";

/** A planned round and the state that planned it (and settles it). */
export interface PlannedSelfDraft {
  readonly state: SelfDraftState;
  readonly round: SelfDraftRound;
}

export class SelfDrafts {
  readonly #drafters: ReadonlyMap<string, SelfDrafter>;
  readonly #states = new Map<string, { readonly drafter: string; readonly state: SelfDraftState }>();

  constructor(drafters: readonly SelfDrafter[]) {
    this.#drafters = new Map(drafters.map((d) => [d.name, d]));
  }

  /** The self-drafters this replica runs. */
  get names(): string[] {
    return [...this.#drafters.keys()];
  }

  /** Plans the sequence's round; `history` is its whole committed history, `room` what its context still holds. */
  plan(
    sequenceId: string,
    ask: SelfDraft__Output,
    history: readonly number[],
    room: number,
    sampling: SamplingParams,
    seed: number,
  ): PlannedSelfDraft {
    const drafter = this.#drafters.get(ask.drafter);
    if (!drafter) {
      throw new VerifyJobError(
        "FAILED_PRECONDITION",
        `this replica drafts with ${this.names.join(", ") || "no self-drafter"}, not "${ask.drafter}"`,
      );
    }
    const asked: SelfDraftAsk = {
      depth: ask.depth,
      width: ask.shape?.width || 1,
      nodes: ask.shape?.nodes || ask.depth,
      room,
      sampling,
      seed,
      ...(ask.lookahead && { lookahead: ask.lookahead }),
    };
    let entry = this.#states.get(sequenceId);
    if (entry?.drafter !== ask.drafter || entry.state.length !== history.length) {
      entry = { drafter: ask.drafter, state: drafter.open(sequenceId, history, asked) };
      this.#states.set(sequenceId, entry);
    }
    return { state: entry.state, round: entry.state.plan(asked) };
  }

  release(sequenceId: string): void {
    this.#states.delete(sequenceId);
  }
}
