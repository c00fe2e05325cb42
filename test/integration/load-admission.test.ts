/**
 * Overload against one real local stack (redis-server, draft service, a target replica and a gateway as processes,
 * stories260k): `npm run load -- --json` at a rate far beyond a gateway admitting 2 requests with 2 waiting sheds
 * the excess with RESOURCE_EXHAUSTED and a retry hint and fails none; and a gateway whose KV memory limit holds two
 * long requests sheds the rest of a burst of them naming that limit, while those it admits finish with the
 * target-only output.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { pino } from "pino";
import { storyPrompts } from "../../bench/prompts.ts";
import { type LocalStack, startLocalStack } from "../../deploy/local-stack.ts";
import { parseGatewayConfig } from "../../gateway/config.ts";
import { loadServedModel } from "../../gateway/served-model.ts";
import { startGateway } from "../../gateway/server.ts";
import { SpecgateClient, SpecgateError } from "../../sdk/index.ts";
import { targetOnlyOutputs } from "../support/target-only.ts";

const MODEL = "stories260k";
const REPORT_FIELDS = [
  "completed",
  "shed",
  "failed",
  "ttft_ms_p50",
  "ttft_ms_p99",
  "tpot_ms_p50",
  "tpot_ms_p99",
  "tokens_per_s",
  "goodput_rps",
] as const;

describe("load and admission on a real local stack", () => {
  let stack: LocalStack;
  const lines: string[] = [];

  before(async () => {
    stack = await startLocalStack({
      pair: "stories260k",
      gatewayPort: 0,
      metricsPorts: "free",
      logLevel: "warn",
      gateway: { maxInFlight: 2, maxQueued: 2, maxQueueMs: 300 },
      log: (line) => lines.push(line),
      env: { ...process.env, REDIS_URL: undefined },
    });
  });

  after(async () => {
    await stack?.stop();
  });

  it("npm run load -- --json at overload: the excess is shed with a retry hint, nothing fails", async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        "--import",
        "tsx",
        "bench/load.ts",
        "--json",
        "--address",
        stack.gatewayAddress,
        "--rate",
        "50",
        "--requests",
        "40",
        "--seed",
        "3",
        "--output-median",
        "24",
      ],
      { maxBuffer: 16 * 1024 * 1024 },
    );
    const lastLine = stdout.trimEnd().split("\n").at(-1) ?? "";
    const report = JSON.parse(lastLine);
    for (const field of REPORT_FIELDS) {
      assert.equal(typeof report[field], "number", `${field} in ${lastLine}`);
    }
    assert.equal(report.failed, 0, `no accepted request may fail: ${JSON.stringify(report.failures)}`);
    assert.ok(report.shed > 0, "40 requests within a second overflow 2 slots and 2 places in the queue");
    assert.equal(report.shed_with_retry_hint, report.shed, "every shed request was told when to retry");
    assert.ok(report.completed > 0);
    assert.equal(report.completed + report.shed, report.requests);
  });

  it("a burst of long requests beyond the KV memory limit is shed naming it; the admitted ones are lossless", async () => {
    const served = await loadServedModel(MODEL);
    const prompts = [0, 1, 2, 3, 4, 5].map((i) =>
      storyPrompts(40)
        .slice(i * 3, i * 3 + 20)
        .join(". "),
    );
    const maxTokens = 40;
    const tokensOf = (prompt: string) => served.tokenizer.encode(prompt, { bos: true }).length + maxTokens;
    const longest = Math.max(...prompts.map(tokensOf));
    const shortest = Math.min(...prompts.map(tokensOf));
    assert.ok(longest < 2 * shortest, "any two fit when the third does not");
    // Room for two of these requests, not three: the rest of the burst must be shed, not sent to the replica.
    const kvBudgetBytes = (2 * longest + shortest / 2) * served.model.kvBytesPerToken;
    const draftAddress = stack.services.find((s) => s.name === "draft")?.address;
    const gateway = await startGateway({
      config: parseGatewayConfig({
        port: 0,
        redisUrl: stack.redisUrl,
        draftAddress,
        drafters: stack.drafters,
        defaultDrafter: stack.defaultDrafter,
        maxQueued: 0,
        kvBudgetBytes: Math.floor(kvBudgetBytes),
      }),
      model: served.model,
      tokenizer: served.tokenizer,
      logger: pino({ level: "silent" }),
    });
    const client = new SpecgateClient({ address: gateway.address, retry: { maxAttempts: 1 } });
    try {
      const outcomes = await Promise.allSettled(
        prompts.map((prompt) => client.generate({ prompt, max_tokens: maxTokens })),
      );
      const shed = outcomes.flatMap((o) => (o.status === "rejected" ? [o.reason] : []));
      assert.equal(shed.length, 4, "two admitted, four shed");
      for (const error of shed) {
        assert.ok(error instanceof SpecgateError && error.codeName === "RESOURCE_EXHAUSTED", String(error));
        assert.match(error.details, /KV memory limit of \d+\.\d MiB/);
        assert.ok(error.retryAfterMs !== undefined && error.retryAfterMs > 0, "shed with a retry hint");
      }
      const reference = await targetOnlyOutputs(MODEL, served.tokenizer, prompts, maxTokens);
      outcomes.forEach((outcome, i) => {
        if (outcome.status === "fulfilled") assert.deepEqual(outcome.value.token_ids, reference.get(prompts[i]));
      });
      assert.equal(gateway.admission.kvReserved, 0, "every reservation released");
      const again = await client.generate({ prompt: prompts[5], max_tokens: maxTokens });
      assert.deepEqual(again.token_ids, reference.get(prompts[5]), "the gateway serves again once memory is free");
      assert.ok(
        stack.pids.every((pid) => process.kill(pid, 0)),
        "no service died",
      );
    } finally {
      client.close();
      await gateway.stop(1000);
    }
  });
});
