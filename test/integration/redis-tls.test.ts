/**
 * Redis with TLS and an ACL user, as managed Redis services are run: a redis-server that listens only on a TLS port,
 * with its default user switched off and one named user limited to the keys and channels under `specgate`. The local
 * stack, given `rediss://user:pass@...` and the CA through NODE_EXTRA_CA_CERTS, serves speculative requests (every
 * verify round trip goes through that Redis) with the target-only output, and its banner does not print the password.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { readyBanner, startLocalStack } from "../../deploy/local-stack.ts";
import { SpecgateClient } from "../../sdk/index.ts";
import { freePort } from "../support/ports.ts";
import { makeTestCertificates } from "../support/tls.ts";

const certs = makeTestCertificates();
const USER = "specgate";
const PASSWORD = "correct-horse-battery";

async function startTlsRedis(port: number, files: NonNullable<typeof certs>): Promise<ChildProcess> {
  const server = spawn(
    "redis-server",
    [
      ...["--port", "0", "--bind", "127.0.0.1", "--tls-port", String(port), "--tls-auth-clients", "no"],
      ...["--tls-cert-file", files.serverCertFile, "--tls-key-file", files.serverKeyFile],
      ...["--tls-ca-cert-file", files.caFile, "--save", "", "--appendonly", "no", "--loglevel", "warning"],
      ...["--user", "default", "off", "--user", USER, "on", `>${PASSWORD}`, "~specgate*", "&specgate*", "+@all"],
    ],
    { stdio: "ignore" },
  );
  const probe = new Redis(`rediss://${USER}:${PASSWORD}@127.0.0.1:${port}`, {
    tls: { ca: readFileSync(files.caFile) },
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  }).on("error", () => undefined);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await probe.connect();
        assert.equal(await probe.ping(), "PONG");
        return server;
      } catch (error) {
        if (attempt > 200) throw error;
        probe.disconnect();
        await sleep(25);
      }
    }
  } finally {
    probe.disconnect();
  }
}

describe("Redis over TLS with an ACL user", { skip: !certs, timeout: 240_000 }, () => {
  it("the local stack serves speculative requests through rediss://user:pass@ with target-only output", async (t) => {
    if (!certs) return;
    t.after(() => certs.remove());
    const port = await freePort();
    const redis = await startTlsRedis(port, certs);
    t.after(async () => {
      redis.kill("SIGTERM");
      if (redis.exitCode === null) await once(redis, "exit");
    });
    const url = `rediss://${USER}:${PASSWORD}@127.0.0.1:${port}`;

    const stack = await startLocalStack({
      gatewayPort: 0,
      metricsPorts: "free",
      log: () => {},
      redisUrl: url,
      // The services trust the test's CA the standard way, as they would a private CA in production.
      env: { ...process.env, NODE_EXTRA_CA_CERTS: certs.caFile },
    });
    const client = new SpecgateClient({ address: stack.gatewayAddress, timeoutMs: 60_000 });
    try {
      assert.equal(stack.ownRedis, false);
      const request = { prompt: "Once upon a time", max_tokens: 24, temperature: 0 };
      const speculative = await client.generate(request);
      const plain = await client.generate({ ...request, drafter: "none" });
      assert.ok((speculative.stats?.draft_tokens ?? 0) > 0, "the rounds were speculative");
      assert.deepEqual(speculative.token_ids, plain.token_ids, "the same tokens as target-only decoding");
      assert.match(speculative.text, /^, there was a little girl named Lily/);

      const banner = readyBanner(stack).join("\n");
      assert.ok(!banner.includes(PASSWORD), "the banner does not print the Redis password");
      assert.ok(banner.includes(`rediss://${USER}:***@127.0.0.1:${port}`), banner);
    } finally {
      client.close();
      await stack.stop();
    }
  });
});
