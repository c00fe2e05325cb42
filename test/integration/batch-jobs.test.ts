/**
 * Batch jobs on real processes: redis-server, a draft service (n-gram drafter), a target replica and gateway
 * processes on 127.0.0.1, driven through the SDK. A batch runs to completion with every item's output equal to
 * target-only greedy decoding; it belongs to its tenant; bad batches are INVALID_ARGUMENT; a cancelled batch stops.
 * The `specgate batch` CLI drives the same calls. The store writes one result per item whoever writes it again, and counts it once.
 * Exactly once: two gateways run a batch's items, each is killed with SIGKILL while running an item, a third gateway
 * finishes the batch, and every item has exactly one result (written once, as the gateways' logs show), equal to
 * target-only output, although the items the killed gateways held were run again.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { sum } from "../../bench/stats.ts";
import { BatchStore } from "../../gateway/batch-store.ts";
import { loadServedModel } from "../../gateway/served-model.ts";
import type { GenerateRequest__Output } from "../../gen/specgate/v1/GenerateRequest.ts";
import { type Batch, type BatchItemInput, SpecgateClient, type SpecgateError } from "../../sdk/index.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { type LogLine, type ServiceProcess, spawnService } from "../support/service-process.ts";
import { targetOnlyOutputs } from "../support/target-only.ts";
import { until } from "../support/until.ts";

const MODEL = "stories260k";
const PROMPTS = [
  "Once upon a time",
  "The little dog",
  "Lily and Ben went to the park. They",
  "Tom had a red ball",
  "One day, a cat",
  "The sun was hot and",
];
const MAX_TOKENS = 40;
/** Long enough items that a kill lands while one runs. */
const LONG_MAX_TOKENS = 200;

describe("batch jobs", { timeout: 180_000 }, () => {
  let redis: RedisServer;
  let draft: ServiceProcess;
  let target: ServiceProcess;
  let draftAddress: string;
  const gateways: ServiceProcess[] = [];
  let expected: Map<string, number[]>;
  let expectedLong: Map<string, number[]>;
  /** The gateway of the tests that kill none. */
  let main: { process: ServiceProcess; client: SpecgateClient };

  async function startGateway(): Promise<{ process: ServiceProcess; client: SpecgateClient }> {
    const process = spawnService(
      "gateway/main.ts",
      ["--port", "0", "--http-port", "off", "--metrics-port", "0", "--batch-lock-ms", "1000"],
      {
        REDIS_URL: redis.url,
        SPECGATE_TARGET_MODEL: MODEL,
        SPECGATE_DRAFT_ADDRESS: draftAddress,
        SPECGATE_DRAFTERS: "ngram",
        SPECGATE_DEFAULT_DRAFTER: "ngram",
        SPECGATE_BATCH_BACKOFF_MS: "100",
        SPECGATE_LOG_LEVEL: "info",
      },
    );
    gateways.push(process);
    const ready = await process.waitForLog((line) => line.msg === "gateway listening");
    return { process, client: new SpecgateClient({ address: String(ready.address) }) };
  }

  function items(maxTokens: number): BatchItemInput[] {
    return PROMPTS.map((prompt, i) => ({ custom_id: `item-${i}`, prompt, max_tokens: maxTokens }));
  }

  async function finished(client: SpecgateClient, id: string, tenant = ""): Promise<Batch> {
    let batch: Batch | undefined;
    await until(
      async () => {
        batch = await client.getBatch(id, { tenant_id: tenant });
        return batch.finished_at_ms > 0;
      },
      `batch ${id} to finish`,
      90_000,
    );
    return batch as Batch;
  }

  /** Every item's result, in index order. */
  async function allResults(client: SpecgateClient, id: string, tenant = "") {
    const results = [];
    let offset = 0;
    do {
      const page = await client.getBatchResults(id, { tenant_id: tenant, offset, limit: 4 });
      results.push(...page.results);
      offset = page.next_offset;
    } while (offset !== 0);
    return results;
  }

  function assertLossless(results: Awaited<ReturnType<typeof allResults>>, outputs: Map<string, number[]>): void {
    assert.deepEqual(
      results.map((r) => r.index),
      PROMPTS.map((_, i) => i),
    );
    for (const result of results) {
      assert.equal(result.custom_id, `item-${result.index}`);
      assert.equal(result.outcome, "response", `item ${result.index}: ${JSON.stringify(result.error)}`);
      assert.deepEqual(result.response?.token_ids, outputs.get(PROMPTS[result.index]), `item ${result.index}`);
    }
  }

  before(async () => {
    redis = await startRedis();
    draft = spawnService("services/draft/main.ts", ["--port", "0", "--metrics-port", "0"], {
      SPECGATE_DRAFTERS: "ngram",
    });
    target = spawnService("services/target/main.ts", ["--replica-id", "r0", "--model", MODEL], {
      REDIS_URL: redis.url,
    });
    const { tokenizer } = await loadServedModel(MODEL);
    [draftAddress, , expected, expectedLong] = await Promise.all([
      draft.waitForLog((l) => l.msg === "draft service listening").then((l) => String(l.address)),
      target.waitForLog((l) => l.msg === "target replica serving"),
      targetOnlyOutputs(MODEL, tokenizer, PROMPTS, MAX_TOKENS),
      targetOnlyOutputs(MODEL, tokenizer, PROMPTS, LONG_MAX_TOKENS),
    ]);
    main = await startGateway();
  });

  after(async () => {
    for (const process of gateways) await process.stop("SIGKILL");
    await draft?.stop("SIGKILL");
    await target?.stop("SIGKILL");
    await redis?.stop();
  });

  it("runs a batch to completion, each output target-only's, the batch its tenant's only", async () => {
    const { client } = main;
    {
      const submitted = await client.submitBatch(items(MAX_TOKENS), { tenant_id: "acme" });
      assert.match(submitted.id, /^batch_/);
      assert.equal(submitted.counts?.total, PROMPTS.length);
      const batch = await finished(client, submitted.id, "acme");
      assert.equal(batch.status, "BATCH_STATUS_COMPLETED");
      assert.deepEqual(batch.counts, { total: PROMPTS.length, completed: PROMPTS.length, failed: 0 });
      assertLossless(await allResults(client, submitted.id, "acme"), expected);

      const listed = await client.listBatches({ tenant_id: "acme" });
      assert.deepEqual(
        listed.batches.map((b) => b.id),
        [submitted.id],
      );
      assert.deepEqual((await client.listBatches({ tenant_id: "other" })).batches, []);
      await assert.rejects(client.getBatch(submitted.id, { tenant_id: "other" }), (error: SpecgateError) => {
        assert.equal(error.codeName, "NOT_FOUND");
        return true;
      });
      await assert.rejects(client.getBatchResults(submitted.id, { tenant_id: "other" }), /NOT_FOUND/);
      await assert.rejects(client.cancelBatch(submitted.id, { tenant_id: "other" }), /NOT_FOUND/);
      // A batch over stays as it ended.
      assert.equal((await client.cancelBatch(submitted.id, { tenant_id: "acme" })).status, "BATCH_STATUS_COMPLETED");
    }
  });

  it("is driven by the CLI: specgate batch submit, status, results, list, cancel", async () => {
    const dir = mkdtempSync(join(tmpdir(), "specgate-batch-"));
    try {
      const file = join(dir, "items.jsonl");
      const lines = PROMPTS.slice(0, 3).map((prompt, i) =>
        JSON.stringify({ custom_id: `cli-${i}`, prompt, max_tokens: MAX_TOKENS }),
      );
      writeFileSync(file, `${lines.join("\n")}\n`);
      const specgate = async (...args: string[]) =>
        (
          await promisify(execFile)(process.execPath, ["sdk/specgate.js", "batch", ...args, "--tenant", "cli"], {
            env: { ...process.env, SPECGATE_ADDRESS: main.client.address },
          })
        ).stdout;
      const submitted = JSON.parse(await specgate("submit", file, "--json")) as Batch;
      assert.equal(submitted.counts?.total, 3);
      await finished(main.client, submitted.id, "cli");
      assert.match(
        await specgate("status", submitted.id),
        new RegExp(`^${submitted.id}  completed  3/3 completed, 0 failed`),
      );
      const results = (await specgate("results", submitted.id))
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line));
      assert.deepEqual(
        results.map((r) => [r.index, r.custom_id, r.token_ids]),
        PROMPTS.slice(0, 3).map((prompt, i) => [i, `cli-${i}`, expected.get(prompt)]),
      );
      assert.match(await specgate("list"), new RegExp(`^${submitted.id}  completed`));
      assert.match(await specgate("cancel", submitted.id), /completed/);
      await assert.rejects(specgate("status", "batch_unknown"), /NOT_FOUND/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses a bad batch with INVALID_ARGUMENT naming the item and field, storing nothing", async () => {
    const { client } = main;
    {
      const invalid = async (submit: Promise<unknown>, pattern: RegExp) => {
        await assert.rejects(submit, (error: SpecgateError) => {
          assert.equal(error.codeName, "INVALID_ARGUMENT");
          assert.match(error.message, pattern);
          return true;
        });
      };
      await invalid(client.submitBatch([]), /at least one item/);
      await invalid(
        client.submitBatch([{ prompt: "Once" }, { prompt: "Twice", max_tokens: 0 }]),
        /items\[1\]\.request: max_tokens must be at least 1/,
      );
      await invalid(
        client.submitBatch([
          { custom_id: "a", prompt: "Once" },
          { custom_id: "a", prompt: "Twice" },
        ]),
        /items\[1\]\.custom_id "a" is not unique/,
      );
      await invalid(client.submitBatch([{ prompt: "Once", tenant_id: "other" }], { tenant_id: "acme" }), /tenant_id/);
      await invalid(
        client.submitBatch([{ prompt: "Once" }], { completion_window_s: 7200, retention_s: 3600 }),
        /retention_s 3600 is shorter/,
      );
      await invalid(client.getBatchResults("x", { limit: 5000 }), /limit must be at most 1000/);
      await invalid(client.getBatch(""), /batch_id: empty strings are not allowed/);
      assert.deepEqual((await client.listBatches()).batches, [], "nothing stored for the tenant");
      assert.equal((await client.listBatches({ tenant_id: "acme" })).batches.length, 1);
    }
  });

  it("cancels a batch: items not started are not run", async () => {
    const { process, client } = main;
    {
      const many = Array.from({ length: 4 }, () => items(LONG_MAX_TOKENS)).flat();
      const submitted = await client.submitBatch(
        many.map((item, i) => ({ ...item, custom_id: `c-${i}` })),
        { tenant_id: "acme" },
      );
      const cancelled = await client.cancelBatch(submitted.id, { tenant_id: "acme" });
      assert.equal(cancelled.status, "BATCH_STATUS_CANCELLED");
      assert.ok(cancelled.finished_at_ms > 0);
      // Whatever was running when the cancel came finishes; then nothing more runs.
      await until(async () => process.logs.filter(started).length === process.logs.filter(resulted).length, "idle");
      const settled = (await client.getBatch(submitted.id, { tenant_id: "acme" })).counts?.completed ?? 0;
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const later = await client.getBatch(submitted.id, { tenant_id: "acme" });
      assert.equal(later.status, "BATCH_STATUS_CANCELLED");
      assert.equal(later.counts?.completed, settled);
      assert.ok(settled < many.length, `${settled} of ${many.length} items ran`);
    }
  });

  it("keeps one result per item, counted once, and ends the batch's status with its last result", async () => {
    const redisClient = new Redis(redis.url);
    try {
      const store = new BatchStore(redisClient);
      const request = { tenant_id: "t" } as GenerateRequest__Output;
      const valid = (n: number) => ({
        items: Array.from({ length: n }, (_, i) => ({ customId: `x${i}`, request })),
        completionWindowS: 60,
        retentionS: 60,
      });
      const error = { code: "INTERNAL", message: "boom" };
      const done = await store.create("t", valid(2));
      assert.equal(await store.writeResult(done.id as string, { index: 0, error }, "failed"), true);
      assert.equal(await store.writeResult(done.id as string, { index: 0, error }, "completed"), false);
      assert.equal((await store.get(done.id as string))?.status, "BATCH_STATUS_VALIDATING");
      await store.queued(done.id as string);
      assert.equal(await store.writeResult(done.id as string, { index: 1, error }, "completed"), true);
      const ended = await store.get(done.id as string);
      assert.deepEqual(ended?.counts, { total: 2, completed: 1, failed: 1 });
      assert.equal(ended?.status, "BATCH_STATUS_COMPLETED");
      assert.ok(Number(ended?.finished_at_ms) > 0);
      assert.equal((await store.results(done.id as string, 0, 5)).length, 2);

      const failed = await store.create("t", valid(1));
      await store.queued(failed.id as string);
      await store.writeResult(failed.id as string, { index: 0, error }, "failed");
      assert.equal((await store.get(failed.id as string))?.status, "BATCH_STATUS_FAILED");
      const expired = await store.create("t", valid(2));
      await store.queued(expired.id as string);
      await store.writeResult(expired.id as string, { index: 0, error }, "completed");
      await store.writeResult(expired.id as string, { index: 1, error }, "expired");
      assert.equal((await store.get(expired.id as string))?.status, "BATCH_STATUS_EXPIRED");
      assert.equal((await redisClient.pttl(`specgate:batch:{${expired.id}}:results`)) > 0, true, "results expire");
    } finally {
      redisClient.disconnect();
    }
  });

  it("queues a batch whose submission ended before queuing it, when the batch is next read", async () => {
    const redisClient = new Redis(redis.url);
    try {
      // As a SubmitBatch killed between storing the batch and queuing its items leaves it, a minute ago.
      const store = new BatchStore(redisClient, () => Date.now() - 60_000);
      const request = (prompt: string) =>
        ({ text: prompt, prompt: "text", max_tokens: MAX_TOKENS, tenant_id: "acme" }) as GenerateRequest__Output;
      const stranded = await store.create("acme", {
        items: PROMPTS.slice(0, 2).map((prompt, i) => ({ customId: `s-${i}`, request: request(prompt) })),
        completionWindowS: 3600,
        retentionS: 3600,
      });
      const id = stranded.id as string;
      const batch = await main.client.getBatch(id, { tenant_id: "acme" });
      assert.equal(batch.status, "BATCH_STATUS_IN_PROGRESS");
      await finished(main.client, id, "acme");
      const results = (await main.client.getBatchResults(id, { tenant_id: "acme" })).results;
      assert.deepEqual(
        results.map((r) => r.response?.token_ids),
        PROMPTS.slice(0, 2).map((prompt) => expected.get(prompt)),
      );
    } finally {
      redisClient.disconnect();
    }
  });

  it("completes every item exactly once when gateways running it are killed with SIGKILL", async () => {
    // Only the gateways of this test run its items.
    main.client.close();
    await main.process.stop();
    const a = await startGateway();
    const b = await startGateway();
    const submitted = await a.client.submitBatch(items(LONG_MAX_TOKENS));
    // Each gateway is killed while it runs an item (started, no result yet), after it has finished one.
    for (const killed of [a, b]) {
      await until(
        () => killed.process.logs.filter(resulted).length >= 1 && running(killed.process.logs),
        "the gateway to be running an item",
        60_000,
      );
      killed.client.close();
      await killed.process.stop("SIGKILL");
    }
    const c = await startGateway();
    try {
      const batch = await finished(c.client, submitted.id);
      assert.equal(batch.status, "BATCH_STATUS_COMPLETED");
      assert.deepEqual(batch.counts, { total: PROMPTS.length, completed: PROMPTS.length, failed: 0 });
      assertLossless(await allResults(c.client, submitted.id), expectedLong);

      const logs = [a, b, c].flatMap((g) => g.process.logs).filter((l) => l.batchId === submitted.id);
      const count = (lines: LogLine[]) => PROMPTS.map((_, i) => lines.filter((l) => l.index === i).length);
      assert.deepEqual(
        count(logs.filter((l) => resulted(l) && l.written === true)),
        PROMPTS.map(() => 1),
      );
      // The items the killed gateways held were run again: exactly once held across re-runs.
      const runs = count(logs.filter(started));
      assert.ok(
        sum(runs) >= PROMPTS.length + 2,
        `runs per item: ${JSON.stringify(runs)} (each killed gateway held one)`,
      );
    } finally {
      c.client.close();
      await c.process.stop();
    }
  });
});

function started(line: LogLine): boolean {
  return line.msg === "batch item started";
}

function resulted(line: LogLine): boolean {
  return line.msg === "batch item result";
}

/** The last item this gateway started has no result from it yet. */
function running(logs: readonly LogLine[]): boolean {
  const last = logs.filter(started).at(-1);
  return last !== undefined && !logs.some((l) => resulted(l) && l.batchId === last.batchId && l.index === last.index);
}
