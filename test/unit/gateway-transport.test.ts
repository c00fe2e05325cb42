import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  draftTlsFiles,
  GATEWAY_SETTINGS,
  gatewayTlsFiles,
  parseGatewayConfig,
  plaintextExposureWarning,
} from "../../gateway/config.ts";
import { isLoopbackHost } from "../../sdk/loopback.ts";
import { loadConfig } from "../../services/config/settings.ts";
import { DRAFT_SETTINGS, draftServerTlsFiles } from "../../services/draft/config.ts";

describe("gateway transport settings", () => {
  it("reads TLS files, API keys and the per-tenant cap from the environment", () => {
    const config = loadConfig(
      GATEWAY_SETTINGS,
      [],
      {
        SPECGATE_TLS_CERT: "/tls/tls.crt",
        SPECGATE_TLS_KEY: "/tls/tls.key",
        SPECGATE_TLS_CLIENT_CA: "/tls/ca.crt",
        SPECGATE_API_KEYS_FILE: "/keys/api-keys",
        SPECGATE_MAX_IN_FLIGHT_PER_TENANT: "4",
      },
      "gateway",
    );
    assert.ok(config);
    assert.deepEqual(gatewayTlsFiles(config), {
      certFile: "/tls/tls.crt",
      keyFile: "/tls/tls.key",
      clientCaFile: "/tls/ca.crt",
    });
    assert.equal(config.apiKeysFile, "/keys/api-keys");
    assert.equal(config.maxInFlightPerTenant, 4);
  });

  it("defaults to plaintext, no keys and no per-tenant cap", () => {
    const config = parseGatewayConfig({});
    assert.equal(gatewayTlsFiles(config), undefined);
    assert.equal(config.apiKeysFile, undefined);
    assert.equal(config.apiKeys, undefined);
    assert.equal(config.maxInFlightPerTenant, 0);
  });

  it("refuses TLS settings that do not make a whole", () => {
    assert.throws(() => gatewayTlsFiles({ tlsCert: "c.pem" }), /needs both .*only one is set/);
    assert.throws(() => gatewayTlsFiles({ tlsKey: "k.pem" }), /needs both/);
    assert.throws(() => gatewayTlsFiles({ tlsClientCa: "ca.pem" }), /--tls-client-ca .* needs TLS/);
    assert.deepEqual(gatewayTlsFiles({ tlsCert: "c.pem", tlsKey: "k.pem" }), {
      certFile: "c.pem",
      keyFile: "k.pem",
      clientCaFile: undefined,
    });
  });

  it("reaches the draft service over TLS when given its CA, with a client certificate for mutual TLS", () => {
    assert.equal(draftTlsFiles({}), undefined, "plaintext by default");
    assert.deepEqual(draftTlsFiles({ draftTlsCa: "ca.pem" }), {
      caFile: "ca.pem",
      certFile: undefined,
      keyFile: undefined,
    });
    assert.deepEqual(draftTlsFiles({ draftTlsCa: "ca.pem", draftTlsCert: "c.pem", draftTlsKey: "k.pem" }), {
      caFile: "ca.pem",
      certFile: "c.pem",
      keyFile: "k.pem",
    });
    assert.throws(() => draftTlsFiles({ draftTlsCert: "c.pem", draftTlsKey: "k.pem" }), /set --draft-tls-ca too/);
    assert.throws(() => draftTlsFiles({ draftTlsCa: "ca.pem", draftTlsCert: "c.pem" }), /needs both/);
    assert.throws(() => parseGatewayConfig({ draftTlsKey: "k.pem" }), /--draft-tls-ca/, "checked with the config");
  });

  it("serves the draft service over TLS from its own settings, refusing halves", () => {
    const config = loadConfig(
      DRAFT_SETTINGS,
      [],
      {
        SPECGATE_DRAFT_TLS_CERT: "/tls/d.crt",
        SPECGATE_DRAFT_TLS_KEY: "/tls/d.key",
        SPECGATE_DRAFT_TLS_CLIENT_CA: "/ca",
      },
      "draft service",
    );
    assert.ok(config);
    assert.deepEqual(draftServerTlsFiles(config), {
      certFile: "/tls/d.crt",
      keyFile: "/tls/d.key",
      clientCaFile: "/ca",
    });
    assert.throws(() => draftServerTlsFiles({ tlsKey: "k.pem" }), /--tls-cert \/ \$SPECGATE_DRAFT_TLS_CERT/);
    assert.throws(() => draftServerTlsFiles({ tlsClientCa: "ca.pem" }), /SPECGATE_DRAFT_TLS_CLIENT_CA needs TLS/);
  });

  it("warns about plaintext on any host but loopback, never with TLS", () => {
    for (const host of ["127.0.0.1", "127.0.0.53", "localhost", "::1", "[::1]"]) {
      assert.ok(isLoopbackHost(host), host);
      assert.equal(plaintextExposureWarning(host, false), undefined, host);
    }
    for (const host of ["0.0.0.0", "::", "10.1.2.3", "gateway.example"]) {
      assert.ok(!isLoopbackHost(host), host);
      assert.match(plaintextExposureWarning(host, false) ?? "", /listens on .* without TLS.*SPECGATE_TLS_CERT/, host);
      assert.equal(plaintextExposureWarning(host, true), undefined, host);
    }
  });
});
