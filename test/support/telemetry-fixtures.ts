/**
 * A scripted request for telemetry tests: rounds with known outcomes and the statistics a client would receive for
 * them, computed here independently of the library under test.
 */
import type { FinishedRequest, RequestLabels, VerifiedRound } from "../../services/telemetry/records.ts";

export const LABELS: RequestLabels = { tenant: "acme", model: "stories260k", drafter: "int4" };

/** (k, proposed, accepted) per round. */
export const SCRIPT: ReadonlyArray<readonly [number, number, number]> = [
  [4, 4, 4],
  [4, 4, 1],
  [5, 3, 0],
  [3, 3, 2],
];

export function scriptedRound(index: number, replica = "0"): VerifiedRound {
  const [k, proposed, accepted] = SCRIPT[index];
  return {
    round: index + 1,
    k,
    proposed,
    accepted,
    nextToken: 100 + index,
    replica,
    batchSize: 2,
    reprefilled: index === 0,
    draftMs: 1.5,
    queueWaitMs: 0.25 * (index + 1),
    verifyMs: 3,
    roundMs: 5,
  };
}

export function scriptedRequest(status = "OK"): FinishedRequest {
  let draft = 0;
  let accepted = 0;
  const proposedPerPosition: number[] = [];
  const acceptedPerPosition: number[] = [];
  for (const [, p, a] of SCRIPT) {
    draft += p;
    accepted += a;
    for (let i = 0; i < p; i++) proposedPerPosition[i] = (proposedPerPosition[i] ?? 0) + 1;
    for (let i = 0; i < p; i++) acceptedPerPosition[i] = (acceptedPerPosition[i] ?? 0) + (i < a ? 1 : 0);
  }
  const rounds = SCRIPT.length;
  const generated = accepted + rounds;
  // Everything the wire SpeculationStats carries that the trace must reproduce, not only the fields metrics need.
  const stats = {
    rounds,
    generated_tokens: generated,
    draft_tokens: draft,
    accepted_tokens: accepted,
    alpha: accepted / draft,
    mean_accepted_per_round: accepted / rounds,
    tokens_per_round: generated / rounds,
    proposed_per_position: proposedPerPosition,
    accepted_per_position: acceptedPerPosition,
    k_per_round: SCRIPT.map(([k]) => k),
    draft_time_ms: 6,
    verify_time_ms: 12,
    queue_time_ms: 2.5,
    total_time_ms: 40,
    time_to_first_token_ms: 7,
    drafter: LABELS.drafter,
    replicas: ["0"],
    round_timings: SCRIPT.map((_, i) => ({ round_ms: 5, queue_wait_ms: 0.25 * (i + 1), batch_size: 2 })),
  };
  return {
    stats,
    inputTokens: 9,
    finishReason: "length",
    status,
  };
}

/**
 * The request span attributes a set of returned statistics must produce: `specgate.<field>` per field, and for a list
 * of records (one per round) `specgate.<field>.<key>` holding that key's values in order.
 */
export function expectedStatAttributes(stats: object): Map<string, unknown> {
  const expected = new Map<string, unknown>();
  for (const [field, value] of Object.entries(stats)) {
    if (Array.isArray(value) && value.length > 0 && typeof value[0] === "object") {
      for (const key of Object.keys(value[0])) {
        expected.set(
          `specgate.${field}.${key}`,
          value.map((record: Record<string, unknown>) => record[key]),
        );
      }
    } else {
      expected.set(`specgate.${field}`, value);
    }
  }
  return expected;
}
