/**
 * Self-drafted rounds through the distributed path, with real processes and no draft service at all: redis-server and
 * two target replicas of stories260K with Medusa heads as child processes, the gateway in this process (its draft
 * address points at nothing), clients through the SDK over gRPC on 127.0.0.1. The replica drafts each round itself
 * and verifies the tree in the same forward: with Lookahead decoding from the sequence's n-gram pool and Jacobi
 * window, with Medusa from the heads' row the last forward left. For both, greedy output equals in-process target-only
 * decoding (of the plain model) on 50 prompts, also when a replica dies mid-run; sampled Lookahead output equals the
 * in-process engine's Lookahead rounds with the same seed; bad settings get INVALID_ARGUMENT.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { storyPrompts } from "../../bench/prompts.ts";
import { parseGatewayConfig } from "../../gateway/config.ts";
import { loadServedModel } from "../../gateway/served-model.ts";
import { type RunningGateway, startGateway } from "../../gateway/server.ts";
import { SpecgateClient, SpecgateError } from "../../sdk/index.ts";
import { generate } from "../../services/engine/generate.ts";
import { DEFAULT_LOOKAHEAD } from "../../services/engine/lookahead.ts";
import { buildModels, defaultSourceDir } from "../../services/model-builder/models-build.ts";
import { MODELS_ROOT } from "../../services/runtime/model-files.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";
import { inParallel } from "../support/in-parallel.ts";
import { freePort } from "../support/ports.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { assertHandedOver, streamsThroughKill } from "../support/streams-through-kill.ts";
import { targetOnlyOutputs } from "../support/target-only.ts";
import { until } from "../support/until.ts";

const MODEL = "stories260k-medusa";
const PLAIN = "stories260k";
const MEDUSA_TREE = { width: 2, nodes: 8 };
const PROMPTS = storyPrompts(50);
const MAX_TOKENS = 32;
const silent = pino({ level: "silent" });

describe("self-drafted rounds (Lookahead, Medusa) through real target processes", { timeout: 180_000 }, () => {
  let redis: RedisServer;
  const targets = new Map<string, ServiceProcess>();
  let gateway: RunningGateway;
  let client: SpecgateClient;
  let tokenizer: Tokenizer;
  let expected: Map<string, number[]>;

  async function startTarget(replicaId: string): Promise<void> {
    const target = spawnService("services/target/main.ts", ["--replica-id", replicaId, "--model", MODEL], {
      REDIS_URL: redis.url,
    });
    targets.set(replicaId, target);
    await target.waitForLog((l) => l.msg === "target replica serving");
  }

  before(async () => {
    await buildModels({ sourceDir: defaultSourceDir(), outDir: MODELS_ROOT, only: [MODEL] });
    redis = await startRedis();
    await Promise.all([startTarget("r0"), startTarget("r1")]);
    const served = await loadServedModel(MODEL);
    tokenizer = served.tokenizer;
    gateway = await startGateway({
      config: parseGatewayConfig({
        port: 0,
        redisUrl: redis.url,
        // Nothing listens there: these rounds never need a draft service.
        draftAddress: `127.0.0.1:${await freePort()}`,
        drafters: "lookahead,medusa",
        defaultDrafter: "lookahead",
      }),
      model: served.model,
      tokenizer,
      logger: silent,
    });
    client = new SpecgateClient({ address: gateway.address });
    await until(async () => gateway.router.replicas.size === 2, "both replicas to be announced");
    expected = await targetOnlyOutputs(PLAIN, tokenizer, PROMPTS, MAX_TOKENS);
  });

  after(async () => {
    client?.close();
    await gateway?.stop(1000);
    await Promise.all([...targets.values()].map((t) => t.stop()));
    await redis?.stop();
  });

  it("lists lookahead and medusa as drafters the replicas run", async () => {
    const listing = await client.listModels();
    assert.deepEqual(
      listing.drafters.map((d) => [d.name, d.kind]),
      [
        ["lookahead", "lookahead"],
        ["medusa", "medusa"],
        ["none", "none"],
      ],
    );
  });

  for (const [drafter, input] of [
    ["lookahead", { k: DEFAULT_LOOKAHEAD.ngram - 1 }],
    ["medusa", { k: 3, tree: MEDUSA_TREE }],
  ] as const) {
    it(`greedy output equals target-only decoding on 50 prompts, ${drafter} drafted by the replicas`, async () => {
      const results = await inParallel(PROMPTS.length, 8, (i) =>
        client.generate({ prompt: PROMPTS[i], max_tokens: MAX_TOKENS, drafter, ...input }),
      );
      for (const [i, result] of results.entries()) {
        assert.deepEqual(result.token_ids, expected.get(PROMPTS[i]), PROMPTS[i]);
        assert.equal(result.stats?.drafter, drafter);
        assert.equal(result.stats?.fallback_rounds, 0, "no round waited for a draft service");
      }
      const accepted = results.reduce((n, r) => n + (r.stats?.accepted_tokens ?? 0), 0);
      const proposed = results.reduce((n, r) => n + (r.stats?.draft_tokens ?? 0), 0);
      assert.ok(accepted > 0 && proposed > accepted, `the replicas' drafts: ${accepted} of ${proposed} accepted`);
      assert.ok(
        results.every((r) => (r.stats?.draft_tree_bytes ?? 0) > 0),
        "every request had trees returned with its verdicts",
      );
    });
  }

  it("sampled Medusa rounds complete, accepting the heads' tokens", async () => {
    const results = await inParallel(6, 3, (i) =>
      client.generate({
        prompt: PROMPTS[i],
        max_tokens: MAX_TOKENS,
        drafter: "medusa",
        k: 3,
        tree: MEDUSA_TREE,
        temperature: 0.8,
        seed: 40 + i,
      }),
    );
    assert.ok(results.every((r) => r.token_ids.length === MAX_TOKENS));
    assert.ok(results.reduce((n, r) => n + (r.stats?.accepted_tokens ?? 0), 0) > 0);
  });

  it("other W, N and G per request give the same greedy output", async () => {
    const lookahead = { window: 6, ngram: 4, candidates: 2 };
    const results = await inParallel(10, 5, (i) =>
      client.generate({ prompt: PROMPTS[i], max_tokens: MAX_TOKENS, drafter: "lookahead", k: 3, lookahead }),
    );
    for (const [i, result] of results.entries()) assert.deepEqual(result.token_ids, expected.get(PROMPTS[i]));
  });

  it("sampled output equals the in-process engine's Lookahead rounds with the same seed", async () => {
    const target = await OnnxCausalLM.load(PLAIN);
    let accepted = 0;
    try {
      for (const [i, prompt] of PROMPTS.slice(0, 6).entries()) {
        const sampling = { temperature: 0.8, topP: 0.95, seed: 900 + i };
        const distributed = await client.generate({
          prompt,
          max_tokens: MAX_TOKENS,
          drafter: "lookahead",
          k: DEFAULT_LOOKAHEAD.ngram - 1,
          temperature: sampling.temperature,
          top_p: sampling.topP,
          seed: sampling.seed,
        });
        const inProcess = await generate(target, tokenizer.encode(prompt, { bos: true }), {
          maxNewTokens: MAX_TOKENS,
          sampling,
          lookahead: { config: DEFAULT_LOOKAHEAD },
        });
        assert.deepEqual(distributed.token_ids, inProcess.tokens, `"${prompt}", seed ${sampling.seed}`);
        accepted += distributed.stats?.accepted_tokens ?? 0;
      }
      assert.ok(accepted > 0, "sampled rounds accepted candidates");
    } finally {
      await target.close();
    }
  });

  it("refuses bad Lookahead settings and lossy acceptance with INVALID_ARGUMENT", async () => {
    for (const input of [
      { lookahead: { window: 99 } },
      { lookahead: { ngram: 1 } },
      { acceptance: "lossy-typical" as const },
      { drafter: "medusa", acceptance: "lossy-top-k" as const },
      { drafter: "medusa", lookahead: { window: 4 } },
    ]) {
      await assert.rejects(
        client.generate({ prompt: PROMPTS[0], max_tokens: 4, ...input }),
        (error: unknown) => error instanceof SpecgateError && error.code === grpc.status.INVALID_ARGUMENT,
        JSON.stringify(input),
      );
    }
  });

  it("a replica killed mid-run: its sequences start their drafting state afresh on the other, output unchanged", async () => {
    const STREAMS = 6;
    const maxTokens = 3 * MAX_TOKENS;
    const prompts = PROMPTS.slice(0, STREAMS);
    const long = await targetOnlyOutputs(PLAIN, tokenizer, prompts, maxTokens);
    const inputs = prompts.map((prompt, i) => ({
      prompt,
      max_tokens: maxTokens,
      ...(i % 2 === 0 ? { drafter: "lookahead", k: 2 } : { drafter: "medusa", k: 3, tree: MEDUSA_TREE }),
    }));
    const result = await streamsThroughKill(client, inputs, () => targets.get("r0")?.child.kill("SIGKILL"));
    for (const [i, { tokens }] of result.runs.entries()) {
      assert.deepEqual(tokens, long.get(prompts[i]), `"${prompts[i]}" after r0 died`);
    }
    assertHandedOver(result, "r0", "r1");
  });
});
