/**
 * The local stack as `npm start` runs it (redis-server, draft service, target replicas, gateway as real processes), on
 * free ports: a generation through the SDK prints the real story, the printed metrics endpoints answer, and stopping
 * leaves no process behind; a service that dies during start-up is named and the others are stopped.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type LocalStackStartError, readyBanner, startLocalStack } from "../../deploy/local-stack.ts";
import { SpecgateClient } from "../../sdk/index.ts";
import { running } from "../support/service-process.ts";

test("the stack serves a story through the SDK and stops every process it started", async () => {
  const lines: string[] = [];
  const stack = await startLocalStack({
    gatewayPort: 0,
    metricsPorts: "free",
    replicas: 2,
    log: (line) => lines.push(line),
    // The stack must not depend on a Redis the caller happens to have.
    env: { ...process.env, REDIS_URL: undefined },
  });
  try {
    assert.ok(stack.ownRedis);
    assert.deepEqual(
      stack.services.map((s) => s.name),
      ["draft", "target-0", "target-1", "gateway"],
    );
    assert.equal(stack.pids.length, 5, "draft, two replicas, gateway, redis-server");
    assert.ok(stack.pids.every(running));

    const client = new SpecgateClient({ address: stack.gatewayAddress, timeoutMs: 60_000 });
    try {
      const result = await client.generate({ prompt: "Once upon a time", max_tokens: 24, temperature: 0 });
      assert.match(result.text, /^, there was a little girl named Lily/);
      assert.equal(result.stats?.drafter, "int4", "the default drafter speculates");
      assert.ok((result.stats?.draft_tokens ?? 0) > 0);
    } finally {
      client.close();
    }

    for (const service of stack.services) {
      assert.ok(service.metricsUrl, `${service.name} has a metrics endpoint`);
      const response = await fetch(service.metricsUrl);
      assert.equal(response.status, 200, `${service.name} serves ${service.metricsUrl}`);
      await response.text();
    }
    assert.ok(
      lines.some((line) => line.startsWith("[gateway] ")),
      "children's logs are prefixed",
    );

    const banner = readyBanner(stack);
    assert.equal(banner.at(-1), "ready");
    assert.ok(
      banner.includes(`  npx specgate generate "Once upon a time" --max-tokens 64 --address ${stack.gatewayAddress}`),
      "the example names the gateway when it is not on the default port",
    );
    assert.ok(
      banner.some((line) => line.includes(`${stack.httpUrl}   <- OpenAI-compatible HTTP API`)),
      "the banner names the HTTP API",
    );
    const models = await fetch(`${stack.httpUrl}/models`);
    assert.equal(models.status, 200, "the gateway process serves the HTTP API on a free port");
  } finally {
    await stack.stop();
  }
  assert.deepEqual(stack.pids.filter(running), [], "no process left behind");
});

test("a service dying during start-up fails the start with its name and last lines, and stops the others", async () => {
  const lines: string[] = [];
  const failure: LocalStackStartError = await startLocalStack({
    gatewayPort: 0,
    metricsPorts: "free",
    log: (line) => lines.push(line),
    // An invalid target setting: the replica exits at once with a configuration error.
    env: { ...process.env, REDIS_URL: undefined, SPECGATE_MAX_BATCH_SIZE: "0" },
  }).then(
    () => assert.fail("the stack started with a broken target"),
    (error) => error,
  );
  assert.equal(failure.name, "LocalStackStartError");
  assert.match(failure.message, /target-0 exited with code \d+ during start-up/);
  assert.match(failure.message, /max-batch-size/);
  assert.ok(failure.pids.length >= 3, "redis, draft and the replica had been started");
  assert.deepEqual(failure.pids.filter(running), [], "everything it started is stopped");
  assert.ok(!lines.some((line) => line.startsWith("[gateway]")), "the gateway never started");
});
