/**
 * Token trees through the whole distributed path, with real processes: redis-server, a draft service drafting on the
 * replicas' verdicts and two target replicas as child processes, the gateway in this process, clients through the
 * SDK over gRPC on 127.0.0.1. With trees on, greedy output equals in-process target-only decoding on 50 prompts, also
 * when the draft service dies mid-run (rounds fall back to K = 0) and when a replica dies mid-run (its sequences are
 * re-prefilled on the other, also on 50 prompts), and when the gateway picks the chain or the tree each round; sampled
 * output equals the in-process engine's tree rounds with the same seed, also when a replica dies mid-run.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { storyPrompts } from "../../bench/prompts.ts";
import { parseGatewayConfig } from "../../gateway/config.ts";
import { loadServedModel } from "../../gateway/served-model.ts";
import { type RunningGateway, startGateway } from "../../gateway/server.ts";
import { quantise } from "../../proto/draft-distribution.ts";
import { type GenerateInput, SpecgateClient, type StreamEvent } from "../../sdk/index.ts";
import { generate } from "../../services/engine/generate.ts";
import { ModelDrafter } from "../../services/engine/model-drafter.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";
import { inParallel } from "../support/in-parallel.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { assertHandedOver, streamsThroughKill } from "../support/streams-through-kill.ts";
import { targetOnlyOutputs } from "../support/target-only.ts";
import { until } from "../support/until.ts";

const MODEL = "stories260k";
const DRAFT_MODEL = "stories260k-int4";
const DRAFTERS = `int4=${DRAFT_MODEL},ngram`;
const PROMPTS = storyPrompts(50);
const MAX_TOKENS = 24;
const TREE = { width: 2, nodes: 8 };
const silent = pino({ level: "silent" });

/** Rounds that verified a tree (more nodes than its depth) show up as more draft tokens than the K asked. */
function branched(stats: { draft_tokens: number; k_per_round: number[] } | null | undefined): boolean {
  return (stats?.draft_tokens ?? 0) > (stats?.k_per_round ?? []).reduce((a, b) => a + b, 0);
}

describe("token trees through real draft and target processes", { timeout: 300_000 }, () => {
  let redis: RedisServer;
  let draft: ServiceProcess;
  let draftPort = 0;
  let draftAddress = "";
  const targets = new Map<string, ServiceProcess>();
  const gateways: RunningGateway[] = [];
  const clients: SpecgateClient[] = [];
  let client: SpecgateClient;
  let tokenizer: Tokenizer;
  let expected: Map<string, number[]>;

  /** A draft service process; with `redisUrl` it drafts on the replicas' verdicts, heard there. */
  async function spawnDraft(port: number, redisUrl?: string): Promise<[ServiceProcess, string]> {
    const process = spawnService("services/draft/main.ts", ["--port", String(port), "--metrics-port", "0"], {
      SPECGATE_DRAFTERS: DRAFTERS,
      ...(redisUrl && { REDIS_URL: redisUrl, SPECGATE_DRAFT_ON_VERDICT: "true" }),
    });
    const line = await process.waitForLog((l) => l.msg === "draft service listening");
    return [process, String(line.address)];
  }

  async function startTarget(replicaId: string): Promise<void> {
    const target = spawnService("services/target/main.ts", ["--replica-id", replicaId, "--model", MODEL], {
      REDIS_URL: redis.url,
    });
    targets.set(replicaId, target);
    await target.waitForLog((l) => l.msg === "target replica serving");
  }

  /** A gateway on the stack's Redis and replicas, drafting at `draftAddress`, once it routes to both replicas. */
  async function startClient(draftAddress: string): Promise<SpecgateClient> {
    const gateway = await startGateway({
      config: parseGatewayConfig({ port: 0, redisUrl: redis.url, draftAddress, drafters: DRAFTERS }),
      model: (await loadServedModel(MODEL)).model,
      tokenizer,
      logger: silent,
    });
    gateways.push(gateway);
    const started = new SpecgateClient({ address: gateway.address });
    clients.push(started);
    await until(async () => gateway.router.replicas.size === 2, "both replicas to be announced");
    return started;
  }

  before(async () => {
    redis = await startRedis();
    [[draft, draftAddress]] = await Promise.all([spawnDraft(0, redis.url), startTarget("r0"), startTarget("r1")]);
    draftPort = Number(draftAddress.split(":")[1]);
    tokenizer = (await loadServedModel(MODEL)).tokenizer;
    client = await startClient(draftAddress);
    expected = await targetOnlyOutputs(MODEL, tokenizer, PROMPTS, MAX_TOKENS);
  });

  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(gateways.map((g) => g.stop(1000)));
    await Promise.all([draft?.stop(), ...[...targets.values()].map((t) => t.stop())]);
    await redis?.stop();
  });

  it("greedy output with trees equals target-only decoding on 50 prompts (model and n-gram trees)", async () => {
    // At a fixed K (the adaptive policy may not speculate at all on this tiny pair): near max_tokens the round's K
    // shrinks, and the trees drafted on the verdicts before are cut to it.
    const results = await inParallel(PROMPTS.length, 8, (i) =>
      client.generate({ prompt: PROMPTS[i], max_tokens: MAX_TOKENS, drafter: "int4", k: 4, tree: TREE }),
    );
    for (const [i, result] of results.entries())
      assert.deepEqual(result.token_ids, expected.get(PROMPTS[i]), PROMPTS[i]);
    assert.ok(
      results.some((r) => branched(r.stats)),
      "rounds verified trees, not chains",
    );
    for (const { stats } of results) {
      assert.ok(stats);
      assert.equal(stats.nodes_per_round, stats.draft_tokens / stats.rounds);
      assert.ok(stats.draft_tree_bytes > 2 * stats.draft_tokens, `${stats.draft_tree_bytes} bytes of trees`);
      assert.ok(stats.accepted_per_position.length <= 4, "accepted per depth, at most K = 4 deep");
    }
    const accepted = results.reduce((n, r) => n + (r.stats?.accepted_tokens ?? 0), 0);
    assert.ok(accepted > results.length * 4, `int4 trees accepted ${accepted} draft tokens`);
    const ngram = await inParallel(10, 5, (i) =>
      client.generate({ prompt: PROMPTS[i], max_tokens: MAX_TOKENS, drafter: "ngram", k: "adaptive", tree: TREE }),
    );
    for (const [i, result] of ngram.entries())
      assert.deepEqual(result.token_ids, expected.get(PROMPTS[i]), `ngram ${i}`);
  });

  it("adaptive trees (chain or tree each round, by the tree policy) stay exact, greedy", async () => {
    // Rounds switch between chains and trees while the draft service drafts on verdicts: a proposal drafted for the
    // round before may be of the other kind, and is verified as what it is. A fresh gateway: its tree policy has no
    // verify costs yet, takes them as flat and starts with trees, then follows what it measures.
    const fresh = await startClient(draftAddress);
    const results = await inParallel(12, 4, (i) =>
      fresh.generate({
        prompt: PROMPTS[i],
        max_tokens: MAX_TOKENS,
        drafter: "int4",
        k: 3,
        tree: { ...TREE, adaptive: true },
      }),
    );
    for (const [i, result] of results.entries()) {
      assert.deepEqual(result.token_ids, expected.get(PROMPTS[i]), `adaptive ${i}`);
    }
    assert.ok(
      results.some((r) => branched(r.stats)),
      "the policy started with trees",
    );
  });

  it("near the end of the context, a tree is cut to the room left and the request ends exactly", async () => {
    const target = await OnnxCausalLM.load(MODEL);
    try {
      // Six tokens short of the context, a prompt where "10 11" was followed by seven different tokens: the n-gram
      // drafter offers several continuations, more nodes than fit.
      const prompt = [1];
      for (let i = 0; prompt.length < target.info.contextLength - 8; i++) prompt.push(10, 11, 20 + (i % 7));
      prompt.push(10, 11);
      const expectedTokens = (await generate(target, prompt, { maxNewTokens: 16 })).tokens;
      const result = await client.generate({
        prompt,
        max_tokens: 16,
        drafter: "ngram",
        k: 4,
        tree: { width: 3, nodes: 12 },
      });
      assert.deepEqual(result.token_ids, expectedTokens);
      assert.equal(result.finish_reason, "FINISH_REASON_CONTEXT_LENGTH");
      assert.ok((result.stats?.draft_tokens ?? 0) > 0, "the n-gram drafter offered trees");
    } finally {
      await target.close();
    }
  });

  it("sampled output with trees equals the in-process engine's with the same seed", async () => {
    // A draft service that waits for the gateway's asks: a tree drafted on a verdict and cut to a smaller K near
    // max_tokens is not the tree a fresh ask of that K grows, so only this path is token for token the engine's.
    const [plainDraft, plainAddress] = await spawnDraft(0);
    const [target, drafterModel] = await Promise.all([OnnxCausalLM.load(MODEL), OnnxCausalLM.load(DRAFT_MODEL)]);
    try {
      const plain = await startClient(plainAddress);
      // Quantised as the draft service does: sampled trees are drawn from the q that travels on the wire.
      const drafter = new ModelDrafter(drafterModel, "int4", { quantise });
      for (const [i, prompt] of PROMPTS.slice(0, 6).entries()) {
        const sampling = { temperature: 0.8, topP: 0.95, seed: 500 + i };
        const input: GenerateInput = {
          prompt,
          max_tokens: MAX_TOKENS,
          drafter: "int4",
          k: 3,
          tree: TREE,
          temperature: sampling.temperature,
          top_p: sampling.topP,
          seed: sampling.seed,
        };
        const [distributed, heard] = await Promise.all([plain.generate(input), client.generate(input)]);
        const inProcess = await generate(target, tokenizer.encode(prompt, { bos: true }), {
          maxNewTokens: MAX_TOKENS,
          sampling,
          speculation: { drafter, k: { kind: "fixed", k: 3 }, tree: TREE },
        });
        assert.deepEqual(distributed.token_ids, inProcess.tokens, `"${prompt}", seed ${sampling.seed}`);
        assert.ok(branched(distributed.stats), "rounds verified trees");
        assert.equal(heard.token_ids.length, MAX_TOKENS, "drafting on verdicts samples a full answer too");
      }
    } finally {
      await Promise.all([plainDraft.stop(), target.close(), drafterModel.close()]);
    }
  });

  it("with the draft service dead mid-run, tree requests fall back to K = 0 and stay exact", async () => {
    const runs = PROMPTS.slice(0, 4).map(async (prompt, i) => {
      const tokens: number[] = [];
      let end: StreamEvent | undefined;
      for await (const event of client.stream({ prompt, max_tokens: MAX_TOKENS, k: 2, tree: TREE })) {
        if (event.type === "delta") {
          tokens.push(...event.token_ids);
          if (i === 0 && tokens.length >= 3 && draft.child.exitCode === null) draft.child.kill("SIGKILL");
        } else end = event;
      }
      assert.deepEqual(tokens, expected.get(prompt), `"${prompt}" after the draft service died`);
      return end;
    });
    const ends = await Promise.all(runs);
    await draft.stop();
    assert.ok(
      ends.some((e) => e?.type === "end" && (e.stats?.fallback_rounds ?? 0) > 0),
      "some rounds ran without a draft",
    );
    [draft] = await spawnDraft(draftPort, redis.url);
    await until(async () => {
      const result = await client.generate({ prompt: PROMPTS[0], max_tokens: MAX_TOKENS, k: 2, tree: TREE });
      assert.deepEqual(result.token_ids, expected.get(PROMPTS[0]));
      return branched(result.stats);
    }, "tree speculation to resume");
  });

  it("a replica killed mid-run hands its tree sequences to the other replica, output unchanged", async () => {
    const STREAMS = 6;
    const maxTokens = 4 * MAX_TOKENS;
    const prompts = PROMPTS.slice(0, STREAMS);
    const long = await targetOnlyOutputs(MODEL, tokenizer, prompts, maxTokens);
    const inputs = prompts.map((prompt) => ({ prompt, max_tokens: maxTokens, k: 3, tree: TREE }));
    const result = await streamsThroughKill(client, inputs, () => targets.get("r0")?.child.kill("SIGKILL"));
    for (const [i, { tokens }] of result.runs.entries()) {
      assert.deepEqual(tokens, long.get(prompts[i]), `"${prompts[i]}" after r0 died`);
    }
    assertHandedOver(result, "r0", "r1");
  });

  /** Starts a replica again after a kill and waits until every gateway routes to both. */
  async function restartTarget(replicaId: string): Promise<void> {
    await targets.get(replicaId)?.stop();
    await startTarget(replicaId);
    await until(async () => gateways.every((g) => g.router.replicas.size === 2), `${replicaId} to be routed to again`);
  }

  it("with a replica killed mid-run, greedy trees on 50 prompts equal target-only decoding", async () => {
    await restartTarget("r0");
    let killed = false;
    const results = await inParallel(PROMPTS.length, 8, async (i) => {
      // Kill r1 while the first requests are in flight on it; the rest run on r0 alone.
      if (i === 12 && !killed) {
        killed = true;
        targets.get("r1")?.child.kill("SIGKILL");
      }
      return client.generate({ prompt: PROMPTS[i], max_tokens: MAX_TOKENS, drafter: "int4", k: 4, tree: TREE });
    });
    for (const [i, result] of results.entries())
      assert.deepEqual(result.token_ids, expected.get(PROMPTS[i]), `"${PROMPTS[i]}" with r1 killed`);
    assert.ok(
      results.some((r) => r.stats?.replicas.includes("r0") && r.stats.replicas.includes("r1")),
      "a sequence moved from r1 to r0",
    );
    assert.ok(
      results.some((r) => branched(r.stats)),
      "rounds verified trees",
    );
  });

  it("with a replica killed mid-run, sampled trees still equal the engine's with the same seed", async () => {
    // Draws are keyed by (seed, position), so a sequence re-prefilled on the other replica gets the verdicts it would
    // have got: the output is the in-process engine's, whose tree sampling passes the chi-square tests.
    await restartTarget("r1");
    const [plainDraft, plainAddress] = await spawnDraft(0);
    const [target, drafterModel] = await Promise.all([OnnxCausalLM.load(MODEL), OnnxCausalLM.load(DRAFT_MODEL)]);
    try {
      const plain = await startClient(plainAddress);
      const STREAMS = 8;
      const maxTokens = 2 * MAX_TOKENS;
      const sampling = (i: number) => ({ temperature: 0.8, topP: 0.95, seed: 700 + i });
      const inputs = PROMPTS.slice(0, STREAMS).map((prompt, i) => {
        const { temperature, topP, seed } = sampling(i);
        return { prompt, max_tokens: maxTokens, drafter: "int4", k: 3, tree: TREE, temperature, top_p: topP, seed };
      });
      const result = await streamsThroughKill(plain, inputs, () => targets.get("r0")?.child.kill("SIGKILL"));
      const { runs } = result;
      for (const { end } of runs) {
        assert.ok(end, "the request completed");
        assert.ok(branched(end.stats), "rounds verified trees");
      }
      assertHandedOver(result, "r0", "r1");
      // Quantised as the draft service does: sampled trees are drawn from the q that travels on the wire.
      const drafter = new ModelDrafter(drafterModel, "int4", { quantise });
      for (const [i, { tokens }] of runs.entries()) {
        const inProcess = await generate(target, tokenizer.encode(PROMPTS[i], { bos: true }), {
          maxNewTokens: maxTokens,
          sampling: sampling(i),
          speculation: { drafter, k: { kind: "fixed", k: 3 }, tree: TREE },
        });
        assert.deepEqual(tokens, inProcess.tokens, `"${PROMPTS[i]}", seed ${sampling(i).seed}, r0 killed`);
      }
    } finally {
      await Promise.all([plainDraft.stop(), target.close(), drafterModel.close()]);
    }
  });
});
