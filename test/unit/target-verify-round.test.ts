/**
 * The target's batched verify round on real ONNX models (tiny random Llamas built on the fly): its verdicts equal the
 * engine's in-process verification of the same rounds, whatever the cache holds (warm, released, evicted, built from
 * another history), also for jobs carrying only the history after a held prefix, and for rounds the replica drafts
 * itself (Lookahead); bad jobs fail alone with a status; a batch that cannot run fails every job in it.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { HeldPrefixes } from "../../gateway/held-prefixes.ts";
import type { VerifyJob } from "../../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../../gen/specgate/v1/VerifyResult.ts";
import { decodeVerifyJob, decodeVerifyResult, encodeVerifyJob, encodeVerifyResult } from "../../proto/verify-queue.ts";
import { generate } from "../../services/engine/generate.ts";
import { lookaheadDrafter } from "../../services/engine/lookahead-drafter.ts";
import { ModelDrafter } from "../../services/engine/model-drafter.ts";
import { decodeTree, pathTokens } from "../../services/engine/token-tree.ts";
import { buildRandomLlama } from "../../services/model-builder/random-llama.ts";
import { VerifyJobError } from "../../services/replica-link/verify-errors.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { SelfDrafts } from "../../services/target/self-drafts.ts";
import { SequenceCache } from "../../services/target/sequence-cache.ts";
import { type BatchReport, VerifyRound } from "../../services/target/verify-round.ts";
import { RandomDrafter } from "../support/random-drafter.ts";
import { type RoundPair, runScriptedRounds, type ScriptedSequence, WIRE_QUANTISED } from "../support/verify-rounds.ts";

const VOCAB = 64;
const CONTEXT = 128;

let dir: string;
let reference: OnnxCausalLM;
let selfDraft: OnnxCausalLM;
let otherDraft: OnnxCausalLM;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "specgate-target-round-"));
  const shape = { vocab: VOCAB, dim: 32, layers: 2, heads: 4, kvHeads: 2, maxSeqLen: CONTEXT };
  await buildRandomLlama(join(dir, "tiny"), { ...shape, seed: 1 });
  await buildRandomLlama(join(dir, "other"), { ...shape, seed: 2 });
  [reference, selfDraft, otherDraft] = await Promise.all([
    OnnxCausalLM.load(join(dir, "tiny")),
    OnnxCausalLM.load(join(dir, "tiny")),
    OnnxCausalLM.load(join(dir, "other")),
  ]);
});

after(async () => {
  await Promise.all([reference, selfDraft, otherDraft, ...targets].map((m) => m?.close()));
  await rm(dir, { recursive: true, force: true });
});

const targets: OnnxCausalLM[] = [];

/**
 * A VerifyRound on its own target model whose runtime has the same cap as the cache (as in a replica); jobs and
 * results go through the queue codec like on the wire.
 */
async function roundUnderTest(maxBytes = Number.MAX_SAFE_INTEGER) {
  const target = await OnnxCausalLM.load(join(dir, "tiny"), { maxCacheBytes: maxBytes });
  targets.push(target);
  const cache = new SequenceCache(target, maxBytes);
  const round = new VerifyRound(cache, "replica-test", target.info.name, new SelfDrafts([lookaheadDrafter(VOCAB)]));
  const reports: BatchReport[] = [];
  round.observe(() => (report) => reports.push(report));
  const verify = async (jobs: VerifyJob[]) => {
    const outcomes = await round.verify(jobs.map((job) => decodeVerifyJob(encodeVerifyJob(job))));
    return outcomes.map((o) => (o instanceof VerifyJobError ? o : decodeVerifyResult(encodeVerifyResult(o))));
  };
  const path = async (jobs: VerifyJob[]): Promise<VerifyResult__Output[]> =>
    (await verify(jobs)).map((o) => {
      if (o instanceof VerifyJobError) throw o;
      return o;
    });
  return { target, cache, round, reports, verify, path };
}

function mixedSequences(prefix: string): ScriptedSequence[] {
  const drafters = [
    new ModelDrafter(selfDraft, "self", WIRE_QUANTISED),
    new ModelDrafter(otherDraft, "other", WIRE_QUANTISED),
    new RandomDrafter(VOCAB),
  ];
  return [0, 0.8].flatMap((temperature) =>
    drafters.map((drafter, i) => ({
      sequenceId: `${prefix}-${drafter.name}-t${temperature}`,
      prompt: [1, 5 + i, 9, 17 + i * 3],
      sampling: { temperature, seed: 1000 + i, ...(i === 1 ? { topK: 20, topP: 0.9 } : {}) },
      drafter,
      k: 3 + (i % 2),
    })),
  );
}

function assertSameVerdicts(pairs: readonly RoundPair[]): void {
  for (const p of pairs) {
    assert.deepEqual(p.distributed, p.inProcess, `sequence ${p.sequenceId} round ${p.round}`);
  }
}

describe("VerifyRound", () => {
  test("batched verdicts equal the in-process engine's, greedy and sampling", async () => {
    const { path, reports } = await roundUnderTest();
    const sequences = mixedSequences("same");
    const pairs = await runScriptedRounds(reference, sequences, 8, path);
    assertSameVerdicts(pairs);
    assert.ok(
      reports.every((r) => r.size === sequences.length),
      "every round ran as one batch",
    );
    const accepted = pairs.reduce((sum, p) => sum + p.result.accepted, 0);
    const rejected = pairs.filter((p) => !p.result.bonus).length;
    assert.ok(accepted > 0 && rejected > 0, `rounds both accept (${accepted}) and reject (${rejected})`);
    assert.ok(pairs.every((p) => p.result.batch_size === sequences.length && p.result.replica_id === "replica-test"));
    assert.ok(
      pairs.every((p) => !p.result.reprefilled),
      "a warm cache needs no re-prefill",
    );
  });

  test("tree jobs batched with chain jobs: verdicts and paths equal the engine's, caches compacted to the path", async () => {
    const { path, reports, target } = await roundUnderTest();
    const chains = mixedSequences("chain");
    const trees: ScriptedSequence[] = [0, 0.8].flatMap((temperature) =>
      [selfDraft, otherDraft].map((model, i) => ({
        sequenceId: `tree-${i}-t${temperature}`,
        prompt: [1, 7 + i, 9, 21],
        sampling: { temperature, seed: 77 + i },
        drafter: new ModelDrafter(model, `tree-${i}`),
        k: 3,
        tree: { width: 2, nodes: 6 },
      })),
    );
    const pairs = await runScriptedRounds(reference, [...chains, ...trees], 6, async (jobs) => {
      const results = await path(jobs);
      // Every cache holds exactly the history, the accepted path and nothing of the rejected nodes.
      for (const [i, job] of jobs.entries()) {
        const length = (job.history?.length ?? 0) + results[i].accepted;
        assert.equal(target.sequenceLength(job.sequence_id as string), length, `${job.sequence_id} cache length`);
      }
      return results;
    });
    assertSameVerdicts(pairs);
    assert.ok(
      reports.every((r) => r.size === chains.length + trees.length),
      "chains and trees in one forward",
    );
    const treeRounds = pairs.filter((p) => p.sequenceId.startsWith("tree-"));
    assert.ok(treeRounds.every((p) => p.result.path.length === p.result.accepted));
    assert.ok(
      pairs.every((p) => !p.result.reprefilled),
      "the replica knows what its compacted caches hold",
    );
    assert.ok(
      treeRounds.some((p) => p.result.accepted >= 2),
      "some tree rounds accept a path of two or more",
    );
  });

  test("released and rebuilt caches give the same verdicts (re-prefill from the history)", async () => {
    const { path, cache, reports } = await roundUnderTest();
    const sequences = mixedSequences("cold");
    let round = 0;
    const forgetful = async (jobs: VerifyJob[]) => {
      if (++round % 2 === 0) cache.release(jobs.map((j) => j.sequence_id as string));
      return path(jobs);
    };
    const pairs = await runScriptedRounds(reference, sequences, 6, forgetful);
    assertSameVerdicts(pairs);
    for (const p of pairs) assert.equal(p.result.reprefilled, p.round % 2 === 0, `round ${p.round} re-prefilled`);
    assert.equal(
      reports.reduce((sum, r) => sum + r.reprefills, 0),
      3 * sequences.length,
    );
    const reprefilled = pairs.find((p) => p.result.reprefilled);
    assert.ok(reprefilled && reprefilled.result.positions > 1 + reprefilled.result.accepted);
  });

  test("a cache built from another history is not trusted beyond the common prefix", async () => {
    const { verify } = await roundUnderTest();
    const sampling = { temperature: 0, seed: 1 };
    const first = await verify([
      { sequence_id: "fork", round: 1, history: [1, 2, 3, 4, 5, 6], draft_tokens: [7, 8], sampling },
    ]);
    assert.ok(!(first[0] instanceof VerifyJobError));
    const forked = { sequence_id: "fork", round: 2, history: [1, 2, 3, 40, 41, 42, 43], draft_tokens: [9], sampling };
    const [result] = await verify([forked]);
    assert.ok(!(result instanceof VerifyJobError));
    const fresh = await verify([{ ...forked, sequence_id: "fresh", round: 1 }]);
    assert.deepEqual(
      { accepted: result.accepted, next: result.next_token },
      { accepted: (fresh[0] as VerifyResult__Output).accepted, next: (fresh[0] as VerifyResult__Output).next_token },
    );
    assert.equal(result.positions, forked.history.length - 3 + 1, "kept the 3 common tokens, scored the rest");
    assert.equal(result.reprefilled, true);
  });

  test("jobs carrying only the history after a held prefix: same verdicts; a prefix not held is answered history_needed", async () => {
    const { verify, cache, reports } = await roundUnderTest();
    const held = new HeldPrefixes();
    const sequences = mixedSequences("delta");
    const sent: VerifyJob[] = [];
    let round = 0;
    // As the gateway's router does: each job as a delta when the prefix is known, sent again in full on history_needed.
    const deltas = async (jobs: VerifyJob[]): Promise<VerifyResult__Output[]> => {
      // Every third batch finds its caches released (as after an eviction or a restart).
      if (++round % 3 === 0) cache.release(jobs.map((j) => j.sequence_id as string));
      const results: VerifyResult__Output[] = [];
      for (const job of jobs) {
        const id = job.sequence_id as string;
        const delta = held.jobFor(id, "replica-test", job);
        sent.push(delta);
        let [outcome] = await verify([delta]);
        if (!(outcome instanceof VerifyJobError) && outcome.history_needed) {
          held.missed(id);
          [outcome] = await verify([job]);
        }
        if (outcome instanceof VerifyJobError) throw outcome;
        held.verified(id, "replica-test", job, outcome);
        results.push(outcome);
      }
      return results;
    };
    const pairs = await runScriptedRounds(reference, sequences, 7, deltas);
    assertSameVerdicts(pairs);
    const needed = reports.reduce((sum, r) => sum + r.historyNeeded, 0);
    assert.equal(needed, 2 * sequences.length, "rounds 3 and 6 of each sequence found no cache");
    const later = sent.filter((j) => j.round !== undefined && j.round > 1 && j.held_prefix);
    assert.ok(later.length >= 4 * sequences.length, `${later.length} jobs went as deltas`);
    assert.ok(
      later.every((j) => (j.history?.length ?? 0) === 1),
      "a delta carries the target's last token only",
    );
    for (const p of pairs) {
      assert.equal(p.result.reprefilled, p.round % 3 === 0, `round ${p.round} re-prefilled`);
    }
  });

  test("a held prefix of the wrong length or hash is not trusted", async () => {
    const { verify } = await roundUnderTest();
    const sampling = { temperature: 0, seed: 1 };
    const history = [1, 2, 3, 4, 5, 6];
    const [first] = await verify([{ sequence_id: "claim", round: 1, history, draft_tokens: [7], sampling }]);
    assert.ok(!(first instanceof VerifyJobError));
    const held = new HeldPrefixes();
    held.verified("claim", "r", { history }, first);
    const next = [...history, ...(first.accepted ? [7] : []), first.next_token];
    const honest = held.jobFor("claim", "r", { sequence_id: "claim", round: 2, history: next, sampling });
    assert.ok(honest.held_prefix);
    const { length, hash_high, hash_low } = honest.held_prefix;
    const forged = [
      { length: (length ?? 0) - 1, hash_high, hash_low },
      { length, hash_high: ((hash_high ?? 0) + 1) >>> 0, hash_low },
      { length, hash_high, hash_low: ((hash_low ?? 0) ^ 1) >>> 0 },
    ];
    for (const held_prefix of forged) {
      const [outcome] = await verify([{ ...honest, held_prefix }]);
      assert.ok(!(outcome instanceof VerifyJobError) && outcome.history_needed, JSON.stringify(held_prefix));
    }
    const [outcome] = await verify([honest]);
    assert.ok(!(outcome instanceof VerifyJobError) && !outcome.history_needed && outcome.positions === 1);
  });

  test("bad jobs fail alone with a status; the rest of the batch is verified", async () => {
    const { verify, reports } = await roundUnderTest();
    const sampling = { temperature: 0, seed: 1 };
    const good = { sequence_id: "good", round: 1, history: [1, 2, 3], draft_tokens: [4], sampling };
    const outcomes = await verify([
      good,
      { ...good, sequence_id: "token", draft_tokens: [VOCAB + 5] },
      { ...good, sequence_id: "model", model: "someone-else" },
      { ...good, sequence_id: "late", deadline_unix_ms: Date.now() - 1000 },
      { ...good, sequence_id: "no-q", sampling: { temperature: 1, seed: 3 } },
      { ...good, sequence_id: "no-seed", sampling: { temperature: 0 } },
      { ...good, sequence_id: "long", history: Array.from({ length: CONTEXT }, () => 1) },
      { ...good, sequence_id: "empty", history: [] },
      { ...good, sequence_id: "tree-order", draft_tokens: [], draft_tree: { tokens: [4, 5], parents: [2, 0] } },
      { ...good, sequence_id: "tree-and-chain", draft_tree: { tokens: [4], parents: [0] } },
      {
        ...good,
        sequence_id: "tree-lossy",
        draft_tokens: [],
        draft_tree: { tokens: [4], parents: [0] },
        acceptance: "ACCEPTANCE_MODE_LOSSY_TOP_K",
      },
      { ...good, sequence_id: "tree-token", draft_tokens: [], draft_tree: { tokens: [VOCAB], parents: [0] } },
    ]);
    const codes = outcomes.map((o) => (o instanceof VerifyJobError ? o.code : "OK"));
    assert.deepEqual(codes, [
      "OK",
      "INVALID_ARGUMENT",
      "FAILED_PRECONDITION",
      "DEADLINE_EXCEEDED",
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
    ]);
    assert.match((outcomes[1] as VerifyJobError).message, /outside the vocabulary/);
    assert.match((outcomes[8] as VerifyJobError).message, /parent slot 2/);
    assert.match((outcomes[9] as VerifyJobError).message, /both set/);
    assert.match((outcomes[10] as VerifyJobError).message, /lossless acceptance only/);
    assert.match((outcomes[11] as VerifyJobError).message, /draft_tree token 64 is outside/);
    assert.match((outcomes[4] as VerifyJobError).message, /one draft distribution per draft token/);
    assert.equal(reports.at(-1)?.size, 1, "only the good job reached the forward");
  });

  test("idle sequences are evicted least recently used first under the byte cap", async () => {
    // Each sequence ends up holding about 8 tokens: two fit, four do not.
    const CAP_TOKENS = 20;
    const perToken = reference.info.kvBytesPerToken;
    const { path, cache, reports, target } = await roundUnderTest(CAP_TOKENS * perToken);
    const drafter = new ModelDrafter(otherDraft, "other", WIRE_QUANTISED);
    const sequences: ScriptedSequence[] = [0, 1, 2, 3].map((i) => ({
      sequenceId: `lru-${i}`,
      prompt: [1, 3 + i, 7, 11, 13, 2 + i],
      sampling: { temperature: 0, seed: 5 },
      drafter,
      k: 2,
    }));
    // One sequence per batch, round robin: each batch finds the others idle, the oldest first in line for eviction.
    const pairs: RoundPair[] = [];
    for (const s of sequences) pairs.push(...(await runScriptedRounds(reference, [s], 3, path)));
    assertSameVerdicts(pairs);
    assert.ok(cache.bytes <= CAP_TOKENS * perToken, `cache holds ${cache.bytes} bytes, cap ${CAP_TOKENS * perToken}`);
    assert.ok(cache.evictions > 0, "some idle sequences were evicted");
    const held = sequences.map((s) => target.sequenceLength(s.sequenceId) > 0);
    assert.deepEqual(held, [false, false, true, true], "the least recently used went first");
    assert.ok(reports.some((r) => r.evicted > 0));
  });

  test("self-drafted (Lookahead) rounds give target-only greedy output, also after a release", async () => {
    const { verify, cache } = await roundUnderTest();
    // A repetitive prompt gives the pool candidates from the first round on.
    const prompt = [1, 5, 6, 7, 5, 6, 7, 5, 6, 7, 5, 6];
    const expected = (await generate(reference, prompt, { maxNewTokens: 24 })).tokens;
    const history = [...prompt];
    let accepted = 0;
    for (let round = 1; history.length < prompt.length + 24; round++) {
      // Halfway the cache (and the drafting state with it) goes, as on a failover: the next job starts both afresh.
      if (round === 4) cache.release(["la"]);
      const [outcome] = await verify([
        {
          sequence_id: "la",
          round,
          history,
          sampling: { temperature: 0, seed: 5 },
          self_draft: { drafter: "lookahead", depth: 2, shape: { width: 1, nodes: 2 } },
        },
      ]);
      assert.ok(!(outcome instanceof VerifyJobError), String(outcome));
      const tree = decodeTree(outcome.draft_tree ?? { tokens: [], parents: [], distributions: [] });
      history.push(...pathTokens(tree, outcome.path), outcome.next_token);
      accepted += outcome.accepted;
    }
    assert.deepEqual(history.slice(prompt.length, prompt.length + 24), expected);
    assert.ok(accepted > 0, "candidates from the pool were accepted");
  });

  test("a self-drafter the replica does not run fails the job FAILED_PRECONDITION, alone", async () => {
    const { verify } = await roundUnderTest();
    const job = (sequence_id: string, drafter: string): VerifyJob => ({
      sequence_id,
      round: 1,
      history: [1, 2, 3],
      sampling: { temperature: 0, seed: 1 },
      self_draft: { drafter, depth: 2 },
    });
    const [medusa, lookahead] = await verify([job("m", "medusa"), job("l", "lookahead")]);
    assert.ok(medusa instanceof VerifyJobError);
    assert.equal(medusa.code, "FAILED_PRECONDITION");
    assert.match(medusa.detail, /drafts with lookahead, not "medusa"/);
    assert.ok(!(lookahead instanceof VerifyJobError));
  });

  test("a batch that cannot fit the cache cap fails every job in it", async () => {
    const { verify, target } = await roundUnderTest(4 * reference.info.kvBytesPerToken);
    const sampling = { temperature: 0, seed: 1 };
    const outcomes = await verify([
      { sequence_id: "a", round: 1, history: [1, 2, 3], draft_tokens: [4, 5], sampling },
      { sequence_id: "b", round: 1, history: [1, 2], draft_tokens: [], sampling },
    ]);
    assert.deepEqual(
      outcomes.map((o) => (o instanceof VerifyJobError ? o.code : "OK")),
      ["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"],
    );
    assert.equal(target.sequenceLength("a") + target.sequenceLength("b"), 0, "no cache left behind");
  });
});
