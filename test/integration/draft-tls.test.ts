/**
 * TLS on the internal gateway ↔ draft service hop, with certificates made by the test: a draft service that requires
 * client certificates (mutual TLS) drafts for a gateway that trusts its CA and presents one, with the target-only
 * output; a gateway without a client certificate, or in plaintext, is refused at the handshake and its rounds run
 * without a draft (the designed fallback), still lossless.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { parseGatewayConfig } from "../../gateway/config.ts";
import { loadServedModel, type ServedModel } from "../../gateway/served-model.ts";
import { type RunningGateway, startGateway } from "../../gateway/server.ts";
import { SpecgateClient } from "../../sdk/index.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";
import { freePort } from "../support/ports.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { makeTestCertificates, type TestCertificates } from "../support/tls.ts";

const MODEL = "stories260k";
const DRAFTERS = "int4=stories260k-int4";
const REQUEST = { prompt: "Once upon a time", max_tokens: 24, temperature: 0 };
const certificates = makeTestCertificates();

describe("TLS between the gateway and the draft service", { skip: !certificates, timeout: 180_000 }, () => {
  const certs = certificates as TestCertificates;
  let redis: RedisServer;
  let target: ServiceProcess;
  let draft: ServiceProcess;
  let draftAddress: string;
  let served: { model: ServedModel; tokenizer: Tokenizer };
  const gateways: RunningGateway[] = [];
  const clients: SpecgateClient[] = [];

  async function gatewayClient(tls: Record<string, string>): Promise<SpecgateClient> {
    const gateway = await startGateway({
      config: parseGatewayConfig({ port: 0, redisUrl: redis.url, draftAddress, drafters: DRAFTERS, ...tls }),
      model: served.model,
      tokenizer: served.tokenizer,
      logger: pino({ level: "silent" }),
    });
    gateways.push(gateway);
    await gateway.router.ready();
    const client = new SpecgateClient({ address: gateway.address, timeoutMs: 60_000 });
    clients.push(client);
    return client;
  }

  before(async () => {
    redis = await startRedis();
    target = spawnService("services/target/main.ts", ["--replica-id", "r0", "--model", MODEL], {
      REDIS_URL: redis.url,
    });
    draft = spawnService("services/draft/main.ts", ["--port", String(await freePort()), "--metrics-port", "0"], {
      SPECGATE_DRAFTERS: DRAFTERS,
      SPECGATE_DRAFT_TLS_CERT: certs.serverCertFile,
      SPECGATE_DRAFT_TLS_KEY: certs.serverKeyFile,
      SPECGATE_DRAFT_TLS_CLIENT_CA: certs.caFile,
    });
    const [listening] = await Promise.all([
      draft.waitForLog((l) => l.msg === "draft service listening"),
      target.waitForLog((l) => l.msg === "target replica serving"),
    ]);
    assert.equal(listening.transport, "mutual-tls");
    draftAddress = String(listening.address);
    served = await loadServedModel(MODEL);
  });

  after(async () => {
    for (const client of clients) client.close();
    await Promise.all(gateways.map((g) => g.stop(1000)));
    await draft?.stop();
    await target?.stop();
    await redis?.stop();
    certs.remove();
  });

  it("drafts over mutual TLS for a gateway that trusts the CA and presents a certificate", async () => {
    const client = await gatewayClient({
      draftTlsCa: certs.caFile,
      draftTlsCert: certs.clientCertFile,
      draftTlsKey: certs.clientKeyFile,
    });
    const plain = await client.generate({ ...REQUEST, drafter: "none" });
    const speculative = await client.generate(REQUEST);
    assert.ok((speculative.stats?.draft_tokens ?? 0) > 0, "the draft service proposed tokens");
    assert.equal(speculative.stats?.fallback_rounds, 0);
    assert.deepEqual(speculative.token_ids, plain.token_ids, "the target-only tokens");
  });

  it("refuses a gateway without a client certificate or in plaintext: it decodes without a draft, losslessly", async () => {
    const reference = (await (await gatewayClient({})).generate({ ...REQUEST, drafter: "none" })).token_ids;
    const variants: Record<string, string>[] = [{ draftTlsCa: certs.caFile }, {}];
    for (const tls of variants) {
      const client = await gatewayClient(tls);
      const result = await client.generate(REQUEST);
      assert.equal(result.stats?.draft_tokens, 0, `${JSON.stringify(tls)}: no draft reached it`);
      assert.ok((result.stats?.fallback_rounds ?? 0) > 0, `${JSON.stringify(tls)}: rounds fell back`);
      assert.deepEqual(result.token_ids, reference);
    }
  });
});
