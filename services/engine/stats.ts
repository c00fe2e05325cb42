/**
 * Speculation statistics per request and in aggregate. Field names are snake_case because they travel as they are in
 * JSON, in the wire protocol and in telemetry attributes.
 */

export interface SpeculationStats {
  /** Verify rounds run (a round with K = 0 is one step of plain decoding). */
  rounds: number;
  /** Tokens produced (accepted draft tokens plus the target's correction or bonus token per round). */
  generated_tokens: number;
  /** Draft tokens proposed to the target (for trees, every node). */
  draft_tokens: number;
  /** Draft tokens the target accepted. */
  accepted_tokens: number;
  /** Draft tokens the target rejected: at most one per round (the tokens after it were never judged). */
  rejected_tokens: number;
  /** accepted_tokens / draft_tokens (0 when nothing was proposed): the draft acceptance rate. Depends on K. */
  alpha: number;
  /**
   * accepted_tokens / (accepted_tokens + rejected_tokens): the probability that the target accepts a draft token it
   * judges, the α of E = (1 − α^(K+1)) / (1 − α). Independent of K, so drafters can be compared across K.
   */
  alpha_per_token: number;
  /** accepted_tokens / rounds. */
  mean_accepted_per_round: number;
  /** generated_tokens / rounds (E in the speculative-decoding literature). */
  tokens_per_round: number;
  /** draft_tokens / rounds: positions the target verified per round beside the root (a tree's nodes, a chain's K). */
  nodes_per_round: number;
  /**
   * Per draft position i (0-based; for trees, depth i + 1): how many rounds proposed a token there, and how many of
   * those were accepted (vLLM's spec_decode_num_accepted_tokens_per_pos).
   */
  proposed_per_position: number[];
  accepted_per_position: number[];
  /** accepted_per_position[i] / proposed_per_position[i]. */
  acceptance_per_position: number[];
  /** How many rounds chose each K (index = K). */
  k_histogram: number[];
  /** Time spent drafting (proposals and drafter updates) and verifying (target forwards and acceptance), in ms. */
  draft_time_ms: number;
  verify_time_ms: number;
  /** Time spent filling the target's and the drafter's caches with the prompt, in ms. */
  prefill_time_ms: number;
}

/** Per request, the statistics plus the K chosen for each round in order. */
export interface RequestStats extends SpeculationStats {
  k_per_round: number[];
}

/** One round as the statistics see it. */
export interface RoundRecord {
  /** K the policy asked for. */
  readonly k: number;
  /** Draft tokens actually proposed (a drafter may propose fewer than asked); a tree's nodes. */
  readonly proposed: number;
  /** A tree's depth: the positions its path could be accepted at (a chain's are its `proposed` tokens). */
  readonly depth?: number;
  readonly accepted: number;
  /** Tokens the round added to the output (after stop conditions). */
  readonly emitted: number;
  readonly draftMs: number;
  readonly verifyMs: number;
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : a / b;
}

function addAt(list: number[], index: number, amount: number): void {
  while (list.length <= index) list.push(0);
  list[index] += amount;
}

function addLists(into: number[], from: readonly number[]): void {
  for (let i = 0; i < from.length; i++) addAt(into, i, from[i]);
}

export function emptyStats(): RequestStats {
  return {
    rounds: 0,
    generated_tokens: 0,
    draft_tokens: 0,
    accepted_tokens: 0,
    rejected_tokens: 0,
    alpha: 0,
    alpha_per_token: 0,
    mean_accepted_per_round: 0,
    tokens_per_round: 0,
    nodes_per_round: 0,
    proposed_per_position: [],
    accepted_per_position: [],
    acceptance_per_position: [],
    k_histogram: [],
    draft_time_ms: 0,
    verify_time_ms: 0,
    prefill_time_ms: 0,
    k_per_round: [],
  };
}

/** Recomputes the derived ratios from the counters. */
function derive<T extends SpeculationStats>(stats: T): T {
  stats.alpha = ratio(stats.accepted_tokens, stats.draft_tokens);
  stats.alpha_per_token = ratio(stats.accepted_tokens, stats.accepted_tokens + stats.rejected_tokens);
  stats.mean_accepted_per_round = ratio(stats.accepted_tokens, stats.rounds);
  stats.tokens_per_round = ratio(stats.generated_tokens, stats.rounds);
  stats.nodes_per_round = ratio(stats.draft_tokens, stats.rounds);
  stats.acceptance_per_position = stats.proposed_per_position.map((n, i) => ratio(stats.accepted_per_position[i], n));
  return stats;
}

/** Adds one round to a request's statistics (in place) and returns them. */
export function recordRound(stats: RequestStats, round: RoundRecord): RequestStats {
  stats.rounds++;
  stats.generated_tokens += round.emitted;
  stats.draft_tokens += round.proposed;
  stats.accepted_tokens += round.accepted;
  const positions = round.depth ?? round.proposed;
  if (round.accepted < positions) stats.rejected_tokens++;
  for (let i = 0; i < positions; i++) addAt(stats.proposed_per_position, i, 1);
  for (let i = 0; i < round.accepted; i++) addAt(stats.accepted_per_position, i, 1);
  while (stats.accepted_per_position.length < stats.proposed_per_position.length) stats.accepted_per_position.push(0);
  addAt(stats.k_histogram, round.k, 1);
  stats.k_per_round.push(round.k);
  stats.draft_time_ms += round.draftMs;
  stats.verify_time_ms += round.verifyMs;
  return derive(stats);
}

/** Sums the statistics of many requests (per-round K sequences are not kept in aggregates). */
export function aggregateStats(all: readonly SpeculationStats[]): SpeculationStats {
  const { k_per_round: _, ...total } = emptyStats();
  for (const s of all) {
    total.rounds += s.rounds;
    total.generated_tokens += s.generated_tokens;
    total.draft_tokens += s.draft_tokens;
    total.accepted_tokens += s.accepted_tokens;
    total.rejected_tokens += s.rejected_tokens;
    addLists(total.proposed_per_position, s.proposed_per_position);
    addLists(total.accepted_per_position, s.accepted_per_position);
    addLists(total.k_histogram, s.k_histogram);
    total.draft_time_ms += s.draft_time_ms;
    total.verify_time_ms += s.verify_time_ms;
    total.prefill_time_ms += s.prefill_time_ms;
  }
  return derive(total);
}
