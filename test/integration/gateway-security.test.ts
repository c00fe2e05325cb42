/**
 * Who may use a gateway: TLS and mutual TLS from PEM files, API keys bound to tenants, per-tenant admission. Real
 * redis-server and one target replica as child processes, gateways in this process on 127.0.0.1 with certificates
 * made by openssl for the test, keys made by `specgate keygen`, clients through the SDK and the CLI. Plain decoding
 * (drafter "none", K = 0) on stories260k keeps it quick: speculation is not what is under test.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { checkHealth } from "../../deploy/health.ts";
import { readyBanner, startLocalStack } from "../../deploy/local-stack.ts";
import { parseGatewayConfig } from "../../gateway/config.ts";
import { loadServedModel, type ServedModel } from "../../gateway/served-model.ts";
import { type RunningGateway, startGateway } from "../../gateway/server.ts";
import { type ClientOptions, type GenerateInput, SpecgateClient, SpecgateError } from "../../sdk/index.ts";
import { generate } from "../../services/engine/generate.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";
import { freePort } from "../support/ports.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { makeTestCertificates, type TestCertificates } from "../support/tls.ts";
import { until } from "../support/until.ts";

const MODEL = "stories260k";
const PROMPT = "Once upon a time";
const MAX_TOKENS = 16;
const STORY: GenerateInput = { prompt: PROMPT, max_tokens: MAX_TOKENS, drafter: "none" };
const silent = pino({ level: "silent" });
const run = promisify(execFile);

interface IssuedKey {
  tenant: string;
  api_key: string;
  keys_line: string;
}

async function keygen(tenant: string): Promise<IssuedKey> {
  const { stdout } = await run(process.execPath, ["sdk/specgate.js", "keygen", "--tenant", tenant, "--json"]);
  return JSON.parse(stdout) as IssuedKey;
}

/** Asserts that `call` fails with the gRPC code, and returns the failure's details. */
async function refused(call: Promise<unknown>, code: keyof typeof grpc.status): Promise<string> {
  let details = "";
  await assert.rejects(call, (error: unknown) => {
    assert.ok(error instanceof SpecgateError, String(error));
    assert.equal(error.codeName, code, error.message);
    details = error.details;
    return true;
  });
  return details;
}

const certificates = makeTestCertificates();

describe("gateway security: TLS, mutual TLS, API keys, tenants", { skip: !certificates, timeout: 120_000 }, () => {
  const certs = certificates as TestCertificates;
  let redis: RedisServer;
  let target: ServiceProcess;
  let served: { model: ServedModel; tokenizer: Tokenizer };
  let draftAddress: string;
  let expected: number[];
  let acme: IssuedKey;
  let beta: IssuedKey;
  const gateways: RunningGateway[] = [];
  const clients: SpecgateClient[] = [];

  async function gateway(config: Record<string, unknown>): Promise<RunningGateway> {
    const running = await startGateway({
      config: parseGatewayConfig({
        port: 0,
        redisUrl: redis.url,
        draftAddress,
        defaultDrafter: "none",
        drafters: "ngram",
        verifyTimeoutMs: 5000,
        ...config,
      }),
      model: served.model,
      tokenizer: served.tokenizer,
      logger: silent,
    });
    gateways.push(running);
    await until(() => running.router.replicas.size === 1, "the replica to be announced");
    return running;
  }

  function client(address: string, options: ClientOptions): SpecgateClient {
    const made = new SpecgateClient({ address, retry: { maxAttempts: 1 }, timeoutMs: 10_000, ...options });
    clients.push(made);
    return made;
  }

  before(async () => {
    redis = await startRedis();
    target = spawnService("services/target/main.ts", ["--replica-id", "r0", "--model", MODEL], {
      REDIS_URL: redis.url,
    });
    // Nothing listens there: every request of this file decodes without a draft anyway.
    draftAddress = `127.0.0.1:${await freePort()}`;
    [served, acme, beta] = await Promise.all([loadServedModel(MODEL), keygen("acme"), keygen("beta")]);
    writeFileSync(join(certs.dir, "api-keys"), `# made by specgate keygen\n${acme.keys_line}\n${beta.keys_line}\n`);
    const reference = await OnnxCausalLM.load(MODEL);
    try {
      const ids = served.tokenizer.encode(PROMPT, { bos: true });
      expected = (await generate(reference, ids, { maxNewTokens: MAX_TOKENS })).tokens;
    } finally {
      await reference.close();
    }
    await target.waitForLog((l) => l.msg === "target replica serving");
  });

  after(async () => {
    for (const made of clients) made.close();
    await Promise.all(gateways.map((g) => g.stop(1000)));
    await target?.stop();
    await redis?.stop();
    certs.remove();
  });

  describe("a TLS gateway requiring API keys", () => {
    let secured: RunningGateway;
    let tls: { ca: Buffer };
    before(async () => {
      secured = await gateway({
        tlsCert: certs.serverCertFile,
        tlsKey: certs.serverKeyFile,
        apiKeysFile: join(certs.dir, "api-keys"),
        maxInFlightPerTenant: 1,
      });
      tls = { ca: certs.ca };
    });

    it("says how it is secured", () => {
      assert.equal(secured.transport, "tls");
      assert.equal(secured.apiKeys, 2);
    });

    it("completes the TLS handshake for a client trusting the CA, not for one without it or in plaintext", async () => {
      const trusted = client(secured.address, { tls, apiKey: acme.api_key });
      assert.equal((await trusted.listModels()).models[0].name, MODEL);
      const systemRoots = client(secured.address, { tls: {}, apiKey: acme.api_key });
      await refused(systemRoots.listModels(), "UNAVAILABLE");
      const plaintext = client(secured.address, { tls: false, apiKey: acme.api_key });
      await refused(plaintext.listModels(), "UNAVAILABLE");
    });

    it("refuses calls without a key or with a wrong one (UNAUTHENTICATED), on every Gateway method", async () => {
      const noKey = client(secured.address, { tls });
      const wrongKey = client(secured.address, { tls, apiKey: `${acme.api_key.slice(0, -2)}xx` });
      const hashAsKey = client(secured.address, { tls, apiKey: acme.keys_line.split(":")[1] });
      for (const stranger of [noKey, wrongKey, hashAsKey]) {
        await refused(stranger.generate(STORY), "UNAUTHENTICATED");
        await refused(stranger.listModels(), "UNAUTHENTICATED");
        await refused(
          (async () => {
            for await (const _ of stranger.stream(STORY)) assert.fail("a stranger's stream yielded");
          })(),
          "UNAUTHENTICATED",
        );
      }
      assert.match(await refused(noKey.generate(STORY), "UNAUTHENTICATED"), /requires an API key.*Bearer/);
      assert.equal(await refused(wrongKey.generate(STORY), "UNAUTHENTICATED"), "the API key is not valid");
      assert.equal(secured.admission.inFlight, 0, "no refused call took a slot");
    });

    it("serves the story to the right key, unary and streaming", async () => {
      const keyed = client(secured.address, { tls, apiKey: acme.api_key });
      const result = await keyed.generate(STORY);
      assert.deepEqual(result.token_ids, expected);
      assert.equal(result.finish_reason, "FINISH_REASON_LENGTH");
      assert.ok(result.text.length > 0);
      const streamed: number[] = [];
      for await (const event of keyed.stream({ ...STORY, tenant_id: "acme" })) {
        if (event.type === "delta") streamed.push(...event.token_ids);
      }
      assert.deepEqual(streamed, expected);
    });

    it("refuses a body naming another tenant than the key's with PERMISSION_DENIED", async () => {
      const keyed = client(secured.address, { tls, apiKey: acme.api_key });
      const details = await refused(keyed.generate({ ...STORY, tenant_id: "beta" }), "PERMISSION_DENIED");
      assert.match(details, /names tenant "beta" but its API key belongs to tenant "acme"/);
    });

    it("health answers without a key, over TLS, also to the container health check given the gateway's environment", async () => {
      const health = await checkHealth(secured.address, 5000, grpc.credentials.createSsl(certs.ca));
      assert.deepEqual(health, { serving: true, status: "SERVING" });
      const probe = await run(process.execPath, ["--import", "tsx", "deploy/healthcheck.ts", secured.address], {
        env: { ...process.env, SPECGATE_TLS_CERT: certs.serverCertFile },
      });
      assert.equal(probe.stdout.trim(), `${secured.address}: SERVING`);
      await assert.rejects(run(process.execPath, ["--import", "tsx", "deploy/healthcheck.ts", secured.address]), {
        code: 1,
      });
    });

    it("caps each tenant, counting the key's tenant: RESOURCE_EXHAUSTED names the tenant's limit", async () => {
      const acmeClient = client(secured.address, { tls, apiKey: acme.api_key });
      const betaClient = client(secured.address, { tls, apiKey: beta.api_key });
      const controller = new AbortController();
      const long = (async () => {
        for await (const event of acmeClient.stream({ ...STORY, max_tokens: 400 }, { signal: controller.signal })) {
          if (event.type !== "delta") continue;
          // acme's only slot is taken by this stream (its body names no tenant: the key's counts).
          const details = await refused(acmeClient.generate(STORY), "RESOURCE_EXHAUSTED");
          assert.match(details, /tenant "acme" is at the per-tenant limit of 1 requests/);
          assert.deepEqual((await betaClient.generate(STORY)).token_ids, expected, "another tenant is served");
          controller.abort();
        }
      })();
      await refused(long, "CANCELLED");
      await until(() => secured.admission.inFlight === 0, "the cancelled stream to release its slot");
      assert.deepEqual((await acmeClient.generate(STORY)).token_ids, expected, "acme is served again");
    });

    it("the CLI sends the key from --api-key or SPECGATE_API_KEY, and fails clearly without one", async () => {
      const args = ["sdk/specgate.js", "generate", PROMPT, "--max-tokens", String(MAX_TOKENS)];
      const connection = ["--drafter", "none", "--json", "--address", secured.address, "--tls-ca", certs.caFile];
      const withFlag = await run(process.execPath, [...args, ...connection, "--api-key", beta.api_key]);
      assert.deepEqual(JSON.parse(withFlag.stdout).token_ids, expected);
      const withEnv = await run(process.execPath, [...args, ...connection], {
        env: { ...process.env, SPECGATE_API_KEY: acme.api_key },
      });
      assert.deepEqual(JSON.parse(withEnv.stdout).token_ids, expected);
      const { SPECGATE_API_KEY: _, ...withoutKey } = process.env;
      await assert.rejects(run(process.execPath, [...args, ...connection], { env: withoutKey }), (error: unknown) => {
        const failed = error as { code: number; stderr: string };
        assert.equal(failed.code, 1);
        assert.match(failed.stderr, /UNAUTHENTICATED: this gateway requires an API key/);
        return true;
      });
    });

    it("takes a key added to the file and refuses one taken out, without a restart", async (t) => {
      const file = join(certs.dir, "api-keys");
      const original = readFileSync(file, "utf8");
      t.after(() => writeFileSync(file, original));
      const gamma = await keygen("gamma");
      const newcomer = client(secured.address, { tls, apiKey: gamma.api_key });
      await refused(newcomer.listModels(), "UNAUTHENTICATED");
      writeFileSync(file, `${acme.keys_line}\n${gamma.keys_line}\n`);
      await until(
        () =>
          newcomer.listModels().then(
            () => true,
            () => false,
          ),
        "the added key to be accepted",
        10_000,
      );
      await refused(client(secured.address, { tls, apiKey: beta.api_key }).listModels(), "UNAUTHENTICATED");
      assert.deepEqual((await newcomer.generate(STORY)).token_ids, expected);
    });
  });

  it("a gateway process refuses to start with TLS or keys files it cannot use (or verify timings that defeat each other), and says why", async () => {
    const start = (env: Record<string, string>) => {
      const gatewayProcess = spawnService("gateway/main.ts", ["--port", "0", "--metrics-port", "0"], {
        REDIS_URL: redis.url,
        SPECGATE_DRAFT_ADDRESS: draftAddress,
        ...env,
      });
      return once(gatewayProcess.child, "exit").then(([code]) => ({ code, logs: gatewayProcess.logs }));
    };
    const [halfTls, mismatched, noKeysFile, standbyTooLong] = await Promise.all([
      start({ SPECGATE_TLS_CERT: certs.serverCertFile }),
      start({ SPECGATE_TLS_CERT: certs.serverCertFile, SPECGATE_TLS_KEY: certs.clientKeyFile }),
      start({ SPECGATE_API_KEYS_FILE: join(certs.dir, "no-such-file") }),
      start({ SPECGATE_VERIFY_STANDBY_MS: "3000", SPECGATE_VERIFY_TIMEOUT_MS: "3000" }),
    ]);
    const said = (run: { logs: { msg?: string }[] }) => run.logs.map((l) => l.msg).join("\n");
    assert.equal(halfTls.code, 2);
    assert.match(said(halfTls), /TLS needs both --tls-cert \/ \$SPECGATE_TLS_CERT and --tls-key/);
    assert.equal(mismatched.code, 1);
    assert.match(
      said(mismatched),
      /the TLS files .*server\.pem, .*client\.key are not a usable PEM certificate and key/,
    );
    assert.equal(noKeysFile.code, 1);
    assert.match(said(noKeysFile), /cannot read the API keys file .*no-such-file/);
    assert.equal(standbyTooLong.code, 1);
    assert.match(said(standbyTooLong), /verify standby delay \(3000 ms\) must be shorter than the verify timeout/);
  });

  it("the local stack passes TLS and API keys through to its gateway process and health-checks it over TLS", async () => {
    const stack = await startLocalStack({
      drafters: "ngram",
      defaultDrafter: "none",
      gatewayPort: 0,
      metricsPorts: "free",
      redisUrl: redis.url,
      log: () => {},
      gateway: { tlsCert: certs.serverCertFile, tlsKey: certs.serverKeyFile, apiKeysFile: join(certs.dir, "api-keys") },
    });
    try {
      assert.ok(stack.gatewayTls && stack.gatewayApiKeys);
      assert.ok(readyBanner(stack).some((line) => line.includes("--tls-ca CA.pem --api-key KEY")));
      const keyed = client(stack.gatewayAddress, { tls: { ca: certs.ca }, apiKey: beta.api_key });
      assert.deepEqual((await keyed.generate(STORY)).token_ids, expected);
      const noKey = client(stack.gatewayAddress, { tls: { ca: certs.ca } });
      await refused(noKey.generate(STORY), "UNAUTHENTICATED");
    } finally {
      await stack.stop();
    }
    await assert.rejects(
      startLocalStack({ env: { ...process.env, SPECGATE_TLS_CLIENT_CA: certs.caFile }, log: () => {} }),
      /cannot health-check a gateway that requires client certificates/,
    );
  });

  describe("a gateway requiring client certificates (mutual TLS)", () => {
    let mutual: RunningGateway;
    before(async () => {
      mutual = await gateway({
        tlsCert: certs.serverCertFile,
        tlsKey: certs.serverKeyFile,
        tlsClientCa: certs.caFile,
      });
    });

    it("serves a client presenting a certificate signed by its client CA", async () => {
      assert.equal(mutual.transport, "mutual-tls");
      const holder = client(mutual.address, { tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } });
      assert.deepEqual((await holder.generate(STORY)).token_ids, expected);
    });

    it("refuses a client without a certificate, or with one another CA signed", async (t) => {
      const anonymous = client(mutual.address, { tls: { ca: certs.ca } });
      await refused(anonymous.generate(STORY), "UNAVAILABLE");
      const strangerCerts = makeTestCertificates() as TestCertificates;
      t.after(() => strangerCerts.remove());
      const stranger = client(mutual.address, {
        tls: { ca: certs.ca, cert: strangerCerts.clientCert, key: strangerCerts.clientKey },
      });
      await refused(stranger.generate(STORY), "UNAVAILABLE");
      assert.equal(mutual.admission.inFlight, 0);
    });
  });
});
