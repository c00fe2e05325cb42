/**
 * Redis restarted without its data in the middle of a run (what happens to a Redis without persistence, as the local
 * stack and the k8s component run it): the verify jobs and pushes it held are gone, the services reconnect, and every
 * request in flight still finishes with the target-only output, also with a single target replica. A new request after
 * the restart works as before. A Redis that stays down ends the requests with UNAVAILABLE instead of leaving them
 * waiting for it, and a replica told to stop still exits.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { parseGatewayConfig } from "../../gateway/config.ts";
import { loadServedModel } from "../../gateway/served-model.ts";
import { type RunningGateway, startGateway } from "../../gateway/server.ts";
import { SpecgateClient, SpecgateError } from "../../sdk/index.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { targetOnlyOutputs } from "../support/target-only.ts";

const MODEL = "stories260k";
const DRAFTERS = "int4=stories260k-int4";
const PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben went to the park. They", "One day"];
const MAX_TOKENS = 160;
/** Short, so that a round whose job Redis lost is re-sent soon. */
const VERIFY_TIMEOUT_MS = 1500;

describe("Redis restarted without its data, or gone, mid-run", { timeout: 120_000 }, () => {
  let redis: RedisServer;
  let draft: ServiceProcess;
  let target: ServiceProcess;
  let gateway: RunningGateway;
  let client: SpecgateClient;
  let expected: Map<string, number[]>;

  before(async () => {
    redis = await startRedis();
    draft = spawnService("services/draft/main.ts", ["--port", "0", "--metrics-port", "0"], {
      SPECGATE_DRAFTERS: DRAFTERS,
    });
    target = spawnService("services/target/main.ts", ["--replica-id", "only", "--model", MODEL], {
      REDIS_URL: redis.url,
      SPECGATE_DRAIN_MS: "1000",
    });
    const [listening] = await Promise.all([
      draft.waitForLog((l) => l.msg === "draft service listening"),
      target.waitForLog((l) => l.msg === "target replica serving"),
    ]);
    const served = await loadServedModel(MODEL);
    gateway = await startGateway({
      config: parseGatewayConfig({
        port: 0,
        redisUrl: redis.url,
        draftAddress: String(listening.address),
        drafters: DRAFTERS,
        verifyTimeoutMs: VERIFY_TIMEOUT_MS,
      }),
      model: served.model,
      tokenizer: served.tokenizer,
      logger: pino({ level: "silent" }),
    });
    client = new SpecgateClient({ address: gateway.address });
    expected = await targetOnlyOutputs(MODEL, served.tokenizer, PROMPTS, MAX_TOKENS);
  });

  after(async () => {
    client?.close();
    await gateway?.stop(1000);
    await Promise.all([draft?.stop(), target?.stop()]);
    await redis?.stop();
  });

  it("every request in flight finishes with the target-only output, and new requests work", async () => {
    const received = PROMPTS.map(() => 0);
    let atKill: number[] | undefined;
    let restarted: Promise<void> | undefined;
    const restart = async () => {
      atKill = [...received];
      process.kill(redis.pid, "SIGKILL");
      await new Promise((resolve) => setTimeout(resolve, 300));
      redis = await startRedis({ port: redis.port });
    };
    const runs = PROMPTS.map(async (prompt, i) => {
      const tokens: number[] = [];
      for await (const event of client.stream({ prompt, max_tokens: MAX_TOKENS, k: 2 }, { timeoutMs: 60_000 })) {
        if (event.type !== "delta") continue;
        tokens.push(...event.token_ids);
        received[i] = tokens.length;
        // Once every stream has its first tokens.
        if (restarted === undefined && received.every((n) => n > 0)) restarted = restart();
      }
      return tokens;
    });
    const outputs = await Promise.all(runs);
    await restarted;
    assert.ok(
      atKill?.every((n) => n > 0 && n < MAX_TOKENS),
      `every stream was mid-way when Redis died (${atKill})`,
    );
    outputs.forEach((tokens, i) => {
      assert.deepEqual(tokens, expected.get(PROMPTS[i]), `"${PROMPTS[i]}" across the restart`);
    });
    const after = await client.generate({ prompt: PROMPTS[0], max_tokens: MAX_TOKENS, k: 2 });
    assert.deepEqual(after.token_ids, expected.get(PROMPTS[0]), "a request after the restart");
  });

  it("while Redis stays down, requests end with UNAVAILABLE well before their deadline, and the replica stops", async () => {
    const stream = async () => {
      const tokens: number[] = [];
      for await (const event of client.stream(
        { prompt: PROMPTS[1], max_tokens: MAX_TOKENS, k: 2 },
        { timeoutMs: 60_000 },
      )) {
        if (event.type !== "delta") continue;
        tokens.push(...event.token_ids);
        if (tokens.length === event.token_ids.length) process.kill(redis.pid, "SIGKILL");
      }
      return tokens;
    };
    const unavailable = (error: unknown) => {
      assert.ok(error instanceof SpecgateError, String(error));
      assert.equal(error.code, grpc.status.UNAVAILABLE, error.message);
      assert.match(error.message, /every target replica failed this round \(last: replica only, /);
      return true;
    };
    try {
      await assert.rejects(stream(), unavailable, "the stream in flight");
      await assert.rejects(
        client.generate({ prompt: PROMPTS[0], max_tokens: MAX_TOKENS }, { timeoutMs: 60_000 }),
        unavailable,
        "a new request",
      );
      // Its worker cannot close while Redis is down; the drain is bounded all the same.
      const exited = await Promise.race([
        target.stop(),
        new Promise((resolve) => setTimeout(resolve, 30_000, "running")),
      ]);
      assert.notEqual(exited, "running", "the replica exited on SIGTERM");
    } finally {
      redis = await startRedis({ port: redis.port });
    }
  });
});
