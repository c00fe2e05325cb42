/**
 * The draft service over real gRPC on 127.0.0.1 with real ONNX models (a tiny random Llama built on the fly): its
 * proposals equal the engine's drafters run in process, through rollbacks, evictions and rebuilds; memory returns to
 * idle; bad messages get clear per-sequence errors while the stream carries on; with a real redis-server, a round's
 * verdict settles the round and drafts the next one, which equals what the gateway's own Propose would have drafted.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { Redis } from "ioredis";
import { pino } from "pino";
import { DraftLink } from "../../gateway/draft-link.ts";
import type { DraftClient as DraftClientType } from "../../gen/specgate/v1/Draft.ts";
import type { DraftClientMessage } from "../../gen/specgate/v1/DraftClientMessage.ts";
import type { DraftServerMessage__Output } from "../../gen/specgate/v1/DraftServerMessage.ts";
import type { DraftStats__Output } from "../../gen/specgate/v1/DraftStats.ts";
import { fromWire, quantise } from "../../proto/draft-distribution.ts";
import { DraftClient } from "../../proto/load.ts";
import { encodeDraftVerdict } from "../../proto/verify-queue.ts";
import type { ServiceDrafterSpec } from "../../services/config/drafter-list.ts";
import { loadDrafters } from "../../services/draft/drafters.ts";
import { type RunningDraftServer, startDraftServer } from "../../services/draft/server.ts";
import { DRAFT_SPAN_NAME, instrumentDraftService } from "../../services/draft/telemetry.ts";
import type { Drafter } from "../../services/engine/drafter.ts";
import { ModelDrafter } from "../../services/engine/model-drafter.ts";
import { NgramDrafter } from "../../services/engine/ngram-drafter.ts";
import type { SparseDistribution } from "../../services/engine/sampling.ts";
import { buildRandomLlama } from "../../services/model-builder/random-llama.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { ATTR } from "../../services/telemetry/attributes.ts";
import { startTelemetry } from "../../services/telemetry/index.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";

const VOCAB = 64;
const SPECS: ServiceDrafterSpec[] = [
  { name: "tiny", kind: "model", model: "tiny" },
  { name: "ngram", kind: "ngram" },
];
const silent = pino({ level: "silent" });

let dir: string;
let reference: OnnxCausalLM;

/** One Session stream; server messages are queued per sequence id. */
class Session {
  readonly call: grpc.ClientDuplexStream<DraftClientMessage, DraftServerMessage__Output>;
  readonly #queues = new Map<string, DraftServerMessage__Output[]>();
  readonly #waiters = new Map<string, (message: DraftServerMessage__Output) => void>();
  readonly ended: Promise<grpc.StatusObject>;

  constructor(readonly client: DraftClientType) {
    this.call = client.Session();
    this.call.on("data", (message: DraftServerMessage__Output) => {
      const id = message.proposal?.sequence_id ?? message.error?.sequence_id ?? "";
      const waiter = this.#waiters.get(id);
      if (waiter) {
        this.#waiters.delete(id);
        waiter(message);
      } else {
        this.#queues.set(id, [...(this.#queues.get(id) ?? []), message]);
      }
    });
    this.ended = new Promise((resolve) => {
      this.call.on("status", resolve);
      this.call.on("error", () => {});
    });
  }

  send(message: DraftClientMessage): void {
    this.call.write(message);
  }

  next(sequenceId: string): Promise<DraftServerMessage__Output> {
    const queued = this.#queues.get(sequenceId)?.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => this.#waiters.set(sequenceId, resolve));
  }

  async propose(sequenceId: string, round: number, k: number, historyLength: number) {
    this.send({ propose: { sequence_id: sequenceId, round, k, history_length: historyLength } });
    const message = await this.next(sequenceId);
    assert.equal(message.message, "proposal", `expected a proposal, got ${JSON.stringify(message.error)}`);
    const proposal = message.proposal;
    assert.ok(proposal);
    assert.equal(proposal.round, round);
    return proposal;
  }

  end(): Promise<grpc.StatusObject> {
    this.call.end();
    return this.ended;
  }
}

function unary<T>(invoke: (callback: (error: grpc.ServiceError | null, value?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => invoke((error, value) => (error ? reject(error) : resolve(value as T))));
}

interface Script {
  readonly sequenceId: string;
  readonly drafter: "tiny" | "ngram";
  readonly prompt: number[];
  readonly sampling: { temperature: number; top_k?: number; seed: number };
  readonly rounds: number;
  readonly k: number;
}

/** A deterministic stand-in for the target: accepts a round-dependent prefix and appends a round-dependent token. */
function settle(round: number, proposed: number): { accepted: number; appended: number } {
  return { accepted: Math.min(proposed, round % 3), appended: (round * 13 + 5) % VOCAB };
}

interface Round {
  readonly tokens: number[];
  /** Quantised q's as [ids, probs] pairs. */
  readonly distributions: [number[], number[]][];
  readonly prefilled?: boolean;
}

function plain(q: SparseDistribution): [number[], number[]] {
  return [Array.from(q.ids), Array.from(q.probs)];
}

/** The engine's drafter run in process through the same script. */
async function runInProcess(script: Script, drafter: Drafter): Promise<Round[]> {
  const { sequenceId, sampling } = script;
  const engineSampling = { temperature: sampling.temperature, topK: sampling.top_k, seed: sampling.seed };
  let history = [...script.prompt];
  await drafter.open({ sequenceId, history, sampling: engineSampling, seed: sampling.seed });
  const rounds: Round[] = [];
  for (let round = 1; round <= script.rounds; round++) {
    const [draft] = await drafter.propose([{ sequenceId, k: script.k }]);
    rounds.push({ tokens: draft.tokens, distributions: (draft.distributions ?? []).map(plain) });
    const { accepted, appended } = settle(round, draft.tokens.length);
    drafter.commit(sequenceId, history.length + accepted, [appended]);
    history = history.concat(draft.tokens.slice(0, accepted), [appended]);
  }
  drafter.close(sequenceId);
  return rounds;
}

/** The same script over a Session stream. */
async function runOverStream(script: Script, session: Session): Promise<Round[]> {
  const { sequenceId } = script;
  let historyLength = script.prompt.length;
  session.send({
    open: { sequence_id: sequenceId, drafter: script.drafter, tokens: script.prompt, sampling: script.sampling },
  });
  const rounds: Round[] = [];
  for (let round = 1; round <= script.rounds; round++) {
    const proposal = await session.propose(sequenceId, round, script.k, historyLength);
    rounds.push({
      tokens: proposal.tokens,
      distributions: proposal.distributions.map((d) => plain(fromWire(d))),
      prefilled: proposal.prefilled,
    });
    const { accepted, appended } = settle(round, proposal.tokens.length);
    session.send({ accept: { sequence_id: sequenceId, round, accepted, appended: [appended] } });
    historyLength += accepted + 1;
  }
  return rounds;
}

/**
 * The same proposals: tokens exactly, each q on the same support with probabilities at most two quantisation steps
 * apart. The service batches sequences that the in-process drafter runs alone, and a forward's floats may differ in
 * their last bits with the batch's shape, which can move a quantised probability by one step.
 */
function assertSameRounds(actual: Round[], expected: readonly Round[], label: string): void {
  assert.deepEqual(
    actual.map((r) => r.tokens),
    expected.map((r) => r.tokens),
    label,
  );
  actual.forEach((round, r) => {
    assert.equal(round.distributions.length, expected[r].distributions.length, `${label} round ${r}`);
    round.distributions.forEach(([ids, probs], d) => {
      const [expectedIds, expectedProbs] = expected[r].distributions[d];
      assert.deepEqual(ids, expectedIds, `${label} round ${r} q ${d}: support`);
      for (const [j, p] of probs.entries()) {
        assert.ok(Math.abs(p - expectedProbs[j]) <= 2 / 65536, `${label} round ${r} q ${d}`);
      }
    });
  });
}

interface Served {
  readonly server: RunningDraftServer;
  readonly client: DraftClientType;
  stats(): Promise<DraftStats__Output>;
}

async function serve(capacityBytes: number, redisUrl?: string): Promise<Served> {
  const drafters = await loadDrafters(SPECS, { modelsDir: dir, runtime: { intraOpThreads: 1 } });
  const server = await startDraftServer({
    host: "127.0.0.1",
    port: 0,
    drafters,
    capacityBytes,
    logger: silent,
    redis: redisUrl === undefined ? undefined : { url: redisUrl },
  });
  const client = new DraftClient(server.address, grpc.credentials.createInsecure());
  return {
    server,
    client,
    stats: () => unary<DraftStats__Output>((cb) => client.Stats({}, cb)),
  };
}

async function stop(served: Served): Promise<void> {
  served.client.close();
  await served.server.stop(1000);
}

const PROMPT = [1, 7, 9, 11, 7, 9, 30, 31, 7, 9];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "specgate-draft-"));
  await buildRandomLlama(join(dir, "tiny"), { vocab: VOCAB, dim: 32, layers: 2, heads: 4, kvHeads: 2, maxSeqLen: 64 });
  reference = await OnnxCausalLM.load(join(dir, "tiny"), { intraOpThreads: 1 });
});

after(async () => {
  await reference.close();
  await rm(dir, { recursive: true, force: true });
});

describe("draft service", () => {
  let served: Served;
  before(async () => {
    served = await serve(64 * 1024 * 1024);
  });
  after(() => stop(served));

  test("greedy and sampled proposals of many sequences on one stream equal the engine's drafters in process", async () => {
    const scripts: Script[] = [
      { sequenceId: "greedy", drafter: "tiny", prompt: PROMPT, sampling: { temperature: 0, seed: 1 }, rounds: 6, k: 4 },
      {
        sequenceId: "sampled",
        drafter: "tiny",
        prompt: PROMPT,
        sampling: { temperature: 0.9, top_k: 20, seed: 42 },
        rounds: 6,
        k: 4,
      },
      {
        sequenceId: "sampled-full",
        drafter: "tiny",
        prompt: PROMPT.slice(0, 3),
        sampling: { temperature: 1.3, seed: 7 },
        rounds: 5,
        k: 3,
      },
      {
        sequenceId: "lookup",
        drafter: "ngram",
        prompt: PROMPT,
        sampling: { temperature: 0, seed: 1 },
        rounds: 6,
        k: 4,
      },
      {
        sequenceId: "lookup-sampled",
        drafter: "ngram",
        prompt: PROMPT,
        sampling: { temperature: 0.7, seed: 3 },
        rounds: 6,
        k: 4,
      },
    ];
    const expected: Round[][] = [];
    for (const script of scripts) {
      const drafter =
        script.drafter === "tiny" ? new ModelDrafter(reference, "tiny", { quantise }) : new NgramDrafter();
      expected.push(await runInProcess(script, drafter));
    }
    const session = new Session(served.client);
    // All sequences run at once, interleaved on the one stream (their proposals share drafter calls).
    const actual = await Promise.all(scripts.map((script) => runOverStream(script, session)));
    scripts.forEach((script, i) => {
      assertSameRounds(actual[i], expected[i], `sequence ${script.sequenceId}`);
      assert.equal(actual[i][0].prefilled, true, "the first proposal builds the cache");
      assert.ok(
        actual[i].slice(1).every((r) => r.prefilled === false),
        "later proposals reuse the cache",
      );
    });
    // Non-trivial: tokens were proposed, sampled rounds carry one quantised q per token, greedy rounds none.
    assert.ok(actual[0].every((r) => r.tokens.length === 4 && r.distributions.length === 0));
    assert.ok(actual[1].every((r) => r.tokens.length === 4 && r.distributions.length === 4));
    assert.ok(actual[1].flatMap((r) => r.distributions).every(([ids]) => ids.length > 1 && ids.length <= 20));
    assert.ok(
      actual[3].some((r) => r.tokens.length > 0),
      "the n-gram drafter found matches",
    );
    for (const script of scripts) session.send({ close: { sequence_id: script.sequenceId } });
    await session.end();
  });

  test("Close and the end of a session release every cache: memory accounting returns to idle", async () => {
    const idle = await served.stats();
    assert.equal(idle.cache_bytes, 0);
    const session = new Session(served.client);
    const script = (sequenceId: string): Script => ({
      sequenceId,
      drafter: "tiny",
      prompt: PROMPT,
      sampling: { temperature: 0, seed: 1 },
      rounds: 2,
      k: 4,
    });
    await Promise.all([runOverStream(script("a"), session), runOverStream(script("b"), session)]);
    const busy = await served.stats();
    assert.equal(busy.sequences, 2);
    assert.equal(busy.cached_sequences, 2);
    assert.ok(busy.cache_bytes > 0);
    assert.equal(busy.sessions, 1);

    session.send({ close: { sequence_id: "a" } });
    const released = await unary<{ released: number; cache_bytes: number }>((cb) =>
      served.client.Release({ sequence_ids: ["a", "b", "never-opened"] }, cb),
    );
    assert.equal(released.released, 1, "a was closed on the stream before the Release (messages are ordered)");
    assert.equal(released.cache_bytes, 0);
    let stats = await served.stats();
    assert.equal(stats.sequences, 0);
    assert.equal(stats.cache_bytes, 0);

    // A session that ends without closing its sequences frees them too.
    await runOverStream(script("c"), session);
    assert.ok((await served.stats()).cache_bytes > 0);
    const status = await session.end();
    assert.equal(status.code, grpc.status.OK);
    for (let i = 0; i < 50 && (await served.stats()).sessions > 0; i++) await new Promise((r) => setTimeout(r, 10));
    stats = await served.stats();
    assert.equal(stats.sessions, 0);
    assert.equal(stats.sequences, 0);
    assert.equal(stats.cache_bytes, 0);
  });

  test("bad messages get per-sequence errors with clear codes and the stream carries on", async () => {
    const session = new Session(served.client);
    const errorOf = async (sequenceId: string, message: DraftClientMessage) => {
      session.send(message);
      const reply = await session.next(sequenceId);
      assert.equal(reply.message, "error", `expected an error for ${JSON.stringify(message)}`);
      assert.ok(reply.error);
      return reply.error;
    };

    let error = await errorOf("", {});
    assert.equal(error.code, "DRAFT_ERROR_INVALID_ARGUMENT");
    assert.match(error.message, /none of open, propose, accept, close/);

    error = await errorOf("x", { propose: { sequence_id: "x", round: 3, k: 2, history_length: 4 } });
    assert.equal(error.code, "DRAFT_ERROR_UNKNOWN_SEQUENCE");
    assert.equal(error.round, 3);
    assert.match(error.message, /re-open/);

    error = await errorOf("x", {
      open: { sequence_id: "x", drafter: "medusa", tokens: PROMPT, sampling: { temperature: 0, seed: 1 } },
    });
    assert.equal(error.code, "DRAFT_ERROR_UNKNOWN_DRAFTER");
    assert.match(error.message, /medusa.*tiny, ngram/);

    error = await errorOf("x", { open: { sequence_id: "x", drafter: "tiny", tokens: [], sampling: { seed: 1 } } });
    assert.equal(error.code, "DRAFT_ERROR_INVALID_ARGUMENT");
    assert.match(error.message, /open\.tokens/);

    error = await errorOf("x", {
      open: { sequence_id: "x", drafter: "tiny", tokens: PROMPT, sampling: { temperature: 0.5 } },
    });
    assert.equal(error.code, "DRAFT_ERROR_INVALID_ARGUMENT");
    assert.match(error.message, /seed/);

    error = await errorOf("x", {
      open: { sequence_id: "x", drafter: "tiny", tokens: PROMPT, sampling: { temperature: -1, seed: 1 } },
    });
    assert.match(error.message, /temperature/);

    error = await errorOf("", { propose: { sequence_id: "", round: 1, k: 1, history_length: 1 } });
    assert.match(error.message, /sequence_id must not be empty/);

    session.send({
      open: { sequence_id: "x", drafter: "tiny", tokens: PROMPT, sampling: { temperature: 0, seed: 1 } },
    });
    error = await errorOf("x", { propose: { sequence_id: "x", round: 1, k: 0, history_length: PROMPT.length } });
    assert.equal(error.code, "DRAFT_ERROR_INVALID_ARGUMENT");
    assert.match(error.message, /k must be >= 1/);

    error = await errorOf("x", { propose: { sequence_id: "x", round: 1, k: 2, history_length: PROMPT.length + 1 } });
    assert.equal(error.code, "DRAFT_ERROR_DESYNC");
    error = await errorOf("x", { propose: { sequence_id: "x", round: 0, k: 2, history_length: PROMPT.length } });
    assert.match(error.message, /propose\.round must be >= 1/);
    error = await errorOf("x", { accept: { sequence_id: "x", round: 0, accepted: 0, appended: [5] } });
    assert.match(error.message, /accept\.round must be >= 1/);

    const proposal = await session.propose("x", 1, 2, PROMPT.length);
    assert.equal(proposal.tokens.length, 2);
    error = await errorOf("x", { accept: { sequence_id: "x", round: 1, accepted: 3, appended: [5] } });
    assert.equal(error.code, "DRAFT_ERROR_INVALID_ARGUMENT");
    assert.match(error.message, /outside 0\.\.2/);

    // The sequence and the stream still work: settle round 1, propose round 2 at the right length.
    session.send({ accept: { sequence_id: "x", round: 1, accepted: 2, appended: [5] } });
    assert.equal((await session.propose("x", 2, 3, PROMPT.length + 3)).tokens.length, 3);
    // A round the draft did not propose for (K = 0 on the gateway side) is settled with accepted = 0.
    session.send({ accept: { sequence_id: "x", round: 7, accepted: 0, appended: [4, 6] } });
    assert.equal((await session.propose("x", 8, 1, PROMPT.length + 5)).tokens.length, 1);

    await assert.rejects(
      unary((cb) => served.client.Release({ sequence_ids: [""] }, cb)),
      (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /must not be empty/.test(e.details),
    );
    session.send({ close: { sequence_id: "x" } });
    await session.end();
  });

  test("trees: proposals equal the engine's trees through path settlements; bad shapes and paths are refused", async () => {
    const session = new Session(served.client);
    const sampling = { temperature: 0, seed: 3 };
    const shape = { width: 2, nodes: 6 };
    const inProcess = new ModelDrafter(reference, "tiny");
    await inProcess.open({ sequenceId: "t", history: PROMPT, sampling: { temperature: 0, seed: 3 }, seed: 3 });
    session.send({ open: { sequence_id: "t", drafter: "tiny", tokens: PROMPT, sampling } });
    let historyLength = PROMPT.length;
    for (let round = 1; round <= 4; round++) {
      session.send({ propose: { sequence_id: "t", round, k: 3, history_length: historyLength, tree: shape } });
      const proposal = (await session.next("t")).proposal;
      assert.ok(proposal?.tree, `round ${round} proposes a tree`);
      assert.deepEqual(proposal.tokens, []);
      const [expected] = await inProcess.proposeTrees([{ sequenceId: "t", shape: { depth: 3, ...shape } }]);
      assert.deepEqual(proposal.tree.tokens, Array.from(expected.tokens), `round ${round} tokens`);
      assert.deepEqual(
        proposal.tree.parents,
        Array.from(expected.parents, (p) => p + 1),
        `round ${round} parents`,
      );
      // A path as deep as the round allows (the last node's ancestors), then the target's token.
      const path: number[] = [];
      for (let node = expected.tokens.length - 1; node >= 0; node = expected.parents[node]) path.unshift(node);
      const kept = path.slice(0, round % 3);
      const token = (round * 7) % VOCAB;
      session.send({ accept: { sequence_id: "t", round, accepted: kept.length, appended: [token], path: kept } });
      inProcess.commitPath("t", kept, token);
      historyLength += kept.length + 1;
    }
    inProcess.close("t");

    const errorOf = async (message: DraftClientMessage) => {
      session.send(message);
      const reply = await session.next("t");
      assert.equal(reply.message, "error", `expected an error for ${JSON.stringify(message)}`);
      assert.equal(reply.error?.code, "DRAFT_ERROR_INVALID_ARGUMENT");
      return reply.error?.message ?? "";
    };
    const propose = { sequence_id: "t", round: 5, k: 3, history_length: historyLength };
    assert.match(await errorOf({ propose: { ...propose, tree: { width: 0, nodes: 6 } } }), /tree\.width must be >= 1/);
    assert.match(await errorOf({ propose: { ...propose, tree: { width: 2, nodes: 64 } } }), /tree\.nodes must lie/);
    session.send({ propose: { ...propose, tree: shape } });
    assert.ok((await session.next("t")).proposal?.tree);
    const accept = { sequence_id: "t", round: 5, appended: [4] };
    assert.match(await errorOf({ accept: { ...accept, accepted: 1, path: [99] } }), /does not descend/);
    assert.match(await errorOf({ accept: { ...accept, accepted: 2, path: [0] } }), /accepted = len\(path\)/);
    session.send({ accept: { ...accept, accepted: 0, path: [] } });
    // A path on a round that proposed a chain is refused too.
    assert.equal((await session.propose("t", 6, 2, historyLength + 1)).tokens.length, 2);
    assert.match(await errorOf({ accept: { ...accept, round: 6, accepted: 1, path: [0] } }), /proposed no tree/);
    await session.end();
  });

  test("proposals stop at the drafter's context length", async () => {
    const session = new Session(served.client);
    const long = Array.from({ length: 63 }, (_, i) => (i * 5) % VOCAB);
    session.send({ open: { sequence_id: "long", drafter: "tiny", tokens: long, sampling: { seed: 1 } } });
    assert.equal((await session.propose("long", 1, 4, 63)).tokens.length, 2, "64 - 63 + 1 positions left");
    session.send({ accept: { sequence_id: "long", round: 1, accepted: 1, appended: [3] } });
    assert.equal((await session.propose("long", 2, 4, 65)).tokens.length, 0);
    await session.end();
  });
});

describe("the gateway's draft link", () => {
  test("closes a sequence that a failed settlement left waiting to be re-opened: the draft's table empties", async () => {
    const served = await serve(64 * 1024 * 1024);
    const link = new DraftLink({
      address: served.server.address,
      proposeTimeoutMs: 10_000,
      retryMs: 100,
      logger: silent,
    });
    try {
      const sequence = {
        sequenceId: "settled-badly",
        drafter: "tiny",
        sampling: { temperature: 0, seed: 1 },
        history: () => PROMPT,
      };
      const proposal = await link.propose(sequence, 1, 2, 0);
      assert.equal(proposal?.tokens.length, 2);
      assert.equal((await served.stats()).sequences, 1);
      // More accepted than proposed: the draft answers an error and the link marks the sequence for re-opening.
      link.accept("settled-badly", 1, 5, [3]);
      // Let the error come back before the request ends (on loopback it takes well under a millisecond).
      await new Promise((resolve) => setTimeout(resolve, 300));
      link.close("settled-badly");
      for (let tries = 0; (await served.stats()).sequences > 0 && tries < 200; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.equal((await served.stats()).sequences, 0);
    } finally {
      link.shutdown();
      await stop(served);
    }
  });
});

describe("draft service under a tiny memory cap", () => {
  let served: Served;
  const bytesPerToken = () => reference.info.kvBytesPerToken;
  before(async () => {
    // Room for one sequence of this test at a time, not two.
    served = await serve(22 * bytesPerToken());
  });
  after(() => stop(served));

  test("evicts the least recently used cache and rebuilds it from the history with identical proposals", async () => {
    const scripts: Script[] = ["e1", "e2"].map((sequenceId, i) => ({
      sequenceId,
      drafter: "tiny",
      prompt: PROMPT.slice(i),
      sampling: i === 0 ? { temperature: 0, seed: 1 } : { temperature: 0.8, top_k: 10, seed: 9 },
      rounds: 5,
      k: 4,
    }));
    const expected: Round[][] = [];
    for (const script of scripts)
      expected.push(await runInProcess(script, new ModelDrafter(reference, "t", { quantise })));

    const session = new Session(served.client);
    // Alternate the two sequences one round at a time, so each proposal has to evict the other's cache.
    const histories = scripts.map((s) => s.prompt.length);
    const actual: Round[][] = [[], []];
    for (const s of scripts) {
      session.send({ open: { sequence_id: s.sequenceId, drafter: "tiny", tokens: s.prompt, sampling: s.sampling } });
    }
    for (let round = 1; round <= 5; round++) {
      for (const [i, s] of scripts.entries()) {
        const proposal = await session.propose(s.sequenceId, round, s.k, histories[i]);
        actual[i].push({
          tokens: proposal.tokens,
          distributions: proposal.distributions.map((d) => plain(fromWire(d))),
          prefilled: proposal.prefilled,
        });
        const { accepted, appended } = settle(round, proposal.tokens.length);
        session.send({ accept: { sequence_id: s.sequenceId, round, accepted, appended: [appended] } });
        histories[i] += accepted + 1;
        const stats = await served.stats();
        assert.ok(stats.cache_bytes <= stats.cache_capacity_bytes, "the cap holds");
      }
    }
    for (const [i, s] of scripts.entries()) assertSameRounds(actual[i], expected[i], s.sequenceId);
    assert.ok(
      actual.every((rounds) => rounds.every((r) => r.prefilled)),
      "every round rebuilt an evicted cache",
    );
    const stats = await served.stats();
    assert.ok(stats.evictions >= 9, `evictions: ${stats.evictions}`);
    assert.equal(stats.prefills, 10);
    assert.equal(stats.sequences, 2);
    assert.equal(stats.cached_sequences, 1);

    // A sequence too long for the cap on its own is refused with RESOURCE_EXHAUSTED, the others carry on.
    const huge = Array.from({ length: 60 }, (_, i) => i % VOCAB);
    session.send({ open: { sequence_id: "huge", drafter: "tiny", tokens: huge, sampling: { seed: 1 } } });
    session.send({ propose: { sequence_id: "huge", round: 1, k: 2, history_length: 60 } });
    const reply = await session.next("huge");
    assert.equal(reply.error?.code, "DRAFT_ERROR_RESOURCE_EXHAUSTED");
    assert.equal(reply.error?.round, 1);
    assert.equal((await session.propose("e1", 6, 2, histories[0])).tokens.length, 2);

    for (const id of ["e1", "e2", "huge"]) session.send({ close: { sequence_id: id } });
    await session.end();
    assert.equal((await served.stats()).cache_bytes, 0);
  });
});

describe("draft service shutdown", () => {
  test("stop ends open sessions with UNAVAILABLE and frees their sequences", async () => {
    const served = await serve(1024 * 1024);
    const session = new Session(served.client);
    session.send({ open: { sequence_id: "s", drafter: "tiny", tokens: PROMPT, sampling: { seed: 1 } } });
    await session.propose("s", 1, 2, PROMPT.length);
    const service = served.server.service;
    await served.server.stop(2000);
    const status = await session.ended;
    assert.equal(status.code, grpc.status.UNAVAILABLE);
    assert.match(status.details, /shutting down/);
    assert.equal(service.sequences.counters().sequences, 0);
    served.client.close();
  });
});

describe("draft service drafting on verdicts", () => {
  let redis: RedisServer;
  let served: Served;
  let publisher: Redis;
  before(async () => {
    redis = await startRedis();
    served = await serve(64 * 1024 * 1024, redis.url);
    publisher = new Redis(redis.url);
  });
  after(async () => {
    publisher?.disconnect();
    if (served) await stop(served);
    await redis?.stop();
  });

  test("a verdict settles the round and drafts the next one unasked; the gateway's Accept and Propose then add nothing", async () => {
    const session = new Session(served.client);
    const sampling = { temperature: 0.8, top_k: 8, seed: 5 };
    session.send({ open: { sequence_id: "v", drafter: "tiny", tokens: PROMPT, sampling } });
    session.send({ propose: { sequence_id: "v", round: 1, k: 3, history_length: PROMPT.length, k_next: 2 } });
    const first = (await session.next("v")).proposal;
    assert.ok(first);
    assert.equal(first.on_verdict, false);
    assert.match(first.verdict_channel, /^specgate:draft-verdict:/);

    const verdict = { sequence_id: "v", round: 1, accepted: 1, next_token: 17 };
    assert.equal(await publisher.publish(first.verdict_channel, encodeDraftVerdict(verdict)), 1, "one listener");
    const drafted = (await session.next("v")).proposal;
    assert.ok(drafted, "a proposal arrives without a Propose");
    assert.equal(drafted.round, 2);
    assert.equal(drafted.on_verdict, true);
    assert.equal(drafted.tokens.length, 2);

    // The same history opened afresh and asked for round 2 drafts exactly this (draws depend on seed and position).
    const history = [...PROMPT, first.tokens[0], 17];
    session.send({ open: { sequence_id: "w", drafter: "tiny", tokens: history, sampling } });
    const asked = await session.propose("w", 2, 2, history.length);
    assert.deepEqual(drafted.tokens, asked.tokens);
    assert.deepEqual(drafted.distributions, asked.distributions);

    // The gateway's own settlement and ask for those rounds are answered by what was done: no second proposal, no
    // error, and the history moved once (round 3 is asked at the length the verdict left).
    session.send({ accept: { sequence_id: "v", round: 1, accepted: 1, appended: [17] } });
    session.send({ propose: { sequence_id: "v", round: 2, k: 2, history_length: history.length, k_next: 0 } });
    // A verdict for a round already settled is ignored.
    await publisher.publish(first.verdict_channel, encodeDraftVerdict(verdict));
    session.send({ accept: { sequence_id: "v", round: 2, accepted: 2, appended: [9] } });
    const third = await session.propose("v", 3, 1, history.length + 3);
    assert.equal(third.tokens.length, 1);

    // k_next = 0 (the gateway's last ask above) drafts nothing on the verdict: the next message is the answer to an ask.
    await publisher.publish(first.verdict_channel, encodeDraftVerdict({ ...verdict, round: 3, accepted: 0 }));
    let stats = await served.stats();
    for (let tries = 0; stats.verdicts < 2 && tries < 200; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      stats = await served.stats();
    }
    assert.equal(stats.verdicts, 2, "round 1 and round 3 were settled by their verdicts");
    assert.equal(stats.verdict_proposals, 1);
    const fourth = await session.propose("v", 4, 1, history.length + 4);
    assert.equal(fourth.on_verdict, false);
    await session.end();
  });
});

describe("draft service telemetry", () => {
  test("each proposal is a span in its round's trace; a failed one is marked with its error code", async () => {
    const exporter = new InMemorySpanExporter();
    const processor = new SimpleSpanProcessor({ exporter });
    const telemetry = await startTelemetry({
      serviceName: "specgate-draft",
      metrics: { port: 0 },
      env: { OTEL_METRICS_EXPORTER: "none" },
      spanProcessors: [processor],
    });
    const served = await serve(1024 * 1024);
    try {
      instrumentDraftService(served.server.service, telemetry.metrics);
      const traceId = "0af7651916cd43dd8448eb211c80319c";
      const roundSpanId = "b7ad6b7169203331";
      const trace_context = { traceparent: `00-${traceId}-${roundSpanId}-01` };
      const session = new Session(served.client);
      session.send({ open: { sequence_id: "t", drafter: "tiny", tokens: PROMPT, sampling: { seed: 1 } } });
      session.send({ propose: { sequence_id: "t", round: 1, k: 3, history_length: PROMPT.length, trace_context } });
      assert.equal((await session.next("t")).proposal?.tokens.length, 3);
      session.send({ propose: { sequence_id: "gone", round: 2, k: 3, history_length: 1, trace_context } });
      assert.equal((await session.next("gone")).error?.code, "DRAFT_ERROR_UNKNOWN_SEQUENCE");
      await session.end();

      await processor.forceFlush();
      const spans = exporter.getFinishedSpans().filter((span) => span.name === DRAFT_SPAN_NAME);
      assert.equal(spans.length, 2);
      for (const span of spans) {
        assert.equal(span.spanContext().traceId, traceId);
        assert.equal(span.parentSpanContext?.spanId, roundSpanId);
      }
      const [ok, failed] = spans;
      assert.equal(ok.attributes[ATTR.drafter], "tiny");
      assert.equal(ok.attributes[ATTR.proposed], 3);
      assert.equal(ok.attributes[ATTR.reprefilled], true);
      assert.equal(failed.status.code, SpanStatusCode.ERROR);
      assert.equal(failed.attributes[ATTR.errorType], "DRAFT_ERROR_UNKNOWN_SEQUENCE");
    } finally {
      await stop(served);
      await telemetry.shutdown();
    }
  });
});
