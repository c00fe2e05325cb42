/**
 * The draft service alone, woken two ways (`node --import tsx bench/draft-wake.ts [--rounds N] [--repeats R]`): the
 * draft time of a round drafted on the gateway's Accept + Propose, and of one drafted on the target's verdict heard
 * through Redis (draft.proto, "Drafting on the verdict"), with a target step's idle time before each round and
 * nothing else running. It tells the wake-up path apart from the contention of a whole stack on shared cores (the
 * distributed benchmark's --draft-on-verdict runs measure that). Starts its own redis-server and an in-process draft
 * service on 127.0.0.1; prints one JSON line with the medians.
 */
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { Redis } from "ioredis";
import { pino } from "pino";
import { startRedis } from "../deploy/redis-server.ts";
import type { DraftServerMessage__Output } from "../gen/specgate/v1/DraftServerMessage.ts";
import type { Proposal__Output } from "../gen/specgate/v1/Proposal.ts";
import { DraftClient } from "../proto/load.ts";
import { encodeDraftVerdict } from "../proto/verify-queue.ts";
import { loadDrafters } from "../services/draft/drafters.ts";
import { startDraftServer } from "../services/draft/server.ts";
import { MODELS_ROOT } from "../services/runtime/model-files.ts";
import { DRAFTER_MODELS } from "./speculative.ts";
import { quantile, round } from "./stats.ts";

const { values } = parseArgs({ options: { rounds: { type: "string" }, repeats: { type: "string" } } });
const ROUNDS = Number(values.rounds ?? 40);
const REPEATS = Number(values.repeats ?? 6);
const K = 4;
/** Idle time before each round, as a target step of the cost-scaled pair. */
const TARGET_STEP_MS = 17;
const PROMPT = [1, 403, 407, 261];
const MODEL = DRAFTER_MODELS.int4;
if (MODEL === undefined) throw new Error("the benchmarks' int4 drafter names no model");

const redis = await startRedis();
const drafters = await loadDrafters([{ name: "int4", kind: "model", model: MODEL }], {
  modelsDir: MODELS_ROOT,
  runtime: { intraOpThreads: 1 },
});
const server = await startDraftServer({
  host: "127.0.0.1",
  port: 0,
  drafters,
  capacityBytes: 256 * 1024 * 1024,
  logger: pino({ level: "silent" }),
  redis: { url: redis.url },
});
const client = new DraftClient(server.address, grpc.credentials.createInsecure());
const publisher = new Redis(redis.url);
const session = client.Session();
session.on("error", () => {});
let waiter: ((proposal: Proposal__Output) => void) | undefined;
session.on("data", (message: DraftServerMessage__Output) => {
  if (message.proposal) waiter?.(message.proposal);
});
const nextProposal = () => new Promise<Proposal__Output>((resolve) => (waiter = resolve));

/** Draft times (ms) of one sequence's rounds after the first two, each round woken the given way. */
async function draftTimes(sequenceId: string, onVerdict: boolean): Promise<number[]> {
  let history = [...PROMPT];
  session.write({ open: { sequence_id: sequenceId, drafter: "int4", tokens: history, sampling: { seed: 1 } } });
  let asked = nextProposal();
  const kNext = onVerdict ? K : 0;
  session.write({
    propose: { sequence_id: sequenceId, round: 1, k: K, history_length: history.length, k_next: kNext },
  });
  let proposal = await asked;
  const times: number[] = [];
  for (let round = 1; round < ROUNDS; round++) {
    await new Promise((resolve) => setTimeout(resolve, TARGET_STEP_MS));
    const accepted = 2;
    const nextToken = 300 + (round % 50);
    asked = nextProposal();
    if (onVerdict) {
      const verdict = encodeDraftVerdict({ sequence_id: sequenceId, round, accepted, next_token: nextToken });
      await publisher.publish(proposal.verdict_channel, verdict);
    } else {
      const length = history.length + accepted + 1;
      session.write({ accept: { sequence_id: sequenceId, round, accepted, appended: [nextToken] } });
      session.write({
        propose: { sequence_id: sequenceId, round: round + 1, k: K, history_length: length, k_next: kNext },
      });
    }
    history = [...history, ...proposal.tokens.slice(0, accepted), nextToken];
    proposal = await asked;
    if (round > 2) times.push(proposal.draft_time_ms);
  }
  session.write({ close: { sequence_id: sequenceId } });
  return times;
}

try {
  const onPropose: number[] = [];
  const onVerdict: number[] = [];
  for (let repeat = 0; repeat < REPEATS; repeat++) {
    onPropose.push(...(await draftTimes(`propose-${repeat}`, false)));
    onVerdict.push(...(await draftTimes(`verdict-${repeat}`, true)));
  }
  console.log(
    JSON.stringify({
      drafter_model: MODEL,
      k: K,
      rounds: onPropose.length,
      draft_ms_p50_on_propose: round(quantile(onPropose, 0.5)),
      draft_ms_p50_on_verdict: round(quantile(onVerdict, 0.5)),
    }),
  );
} finally {
  session.end();
  client.close();
  publisher.disconnect();
  await server.stop(1000);
  await redis.stop();
}
