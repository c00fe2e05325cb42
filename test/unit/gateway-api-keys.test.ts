import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { ApiKeys, loadApiKeys, parseApiKeys, watchApiKeys } from "../../gateway/api-keys.ts";
import { identifyCall } from "../../gateway/authentication.ts";
import { apiKeyLine, hashApiKey, newApiKey } from "../../sdk/api-key.ts";
import { until } from "../support/until.ts";

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

function keysFor(...tenants: string[]): { keys: ApiKeys; issued: string[] } {
  const issued = tenants.map(() => newApiKey());
  const text = tenants.map((tenant, i) => apiKeyLine(tenant, issued[i])).join("\n");
  return { keys: new ApiKeys(parseApiKeys(text, "test")), issued };
}

function metadata(...authorization: string[]): Metadata {
  const m = new Metadata();
  for (const value of authorization) m.add("authorization", value);
  return m;
}

describe("API keys", () => {
  it("issues distinct random keys whose line holds the tenant and the key's SHA-256 only", () => {
    const a = newApiKey();
    const b = newApiKey();
    assert.notEqual(a, b);
    assert.match(a, /^sg_[A-Za-z0-9_-]{43}$/);
    const line = apiKeyLine("acme", a);
    assert.equal(line, `acme:${sha256(a)}`);
    assert.ok(!line.includes(a.slice(3)), "the line does not contain the key");
    assert.deepEqual(hashApiKey(a), Buffer.from(sha256(a), "hex"));
    assert.throws(() => apiKeyLine("bad tenant", a), /not a valid name/);
  });

  it("parses lines, comments, blank lines and comma-separated entries", () => {
    const [h1, h2, h3] = ["k1", "k2", "k3"].map(sha256);
    const entries = parseApiKeys(
      `# keys\nacme:${h1}\n\n  beta-2:${h2.toUpperCase()}  # rotated\nacme:${h3},acme:${h1}`,
      "f",
    );
    assert.deepEqual(
      entries.map((e) => [e.tenant, e.hash.toString("hex")]),
      [
        ["acme", h1],
        ["beta-2", h2],
        ["acme", h3],
      ],
      "a repeated line counts once",
    );
  });

  it("refuses bad entries naming the source and line, never echoing a pasted key", () => {
    const key = newApiKey();
    assert.throws(
      () => parseApiKeys(`acme:${sha256("x")}\n${key}`, "keys.txt"),
      (error: Error) => {
        assert.match(error.message, /^keys\.txt line 2: this looks like an API key itself/);
        assert.ok(!error.message.includes(key));
        return true;
      },
    );
    assert.throws(() => parseApiKeys(`acme:${key}`, "f"), /looks like an API key itself/);
    assert.throws(() => parseApiKeys("acme:abc123", "f"), /f line 1: expected TENANT:SHA256HEX/);
    assert.throws(() => parseApiKeys(sha256("x"), "f"), /expected TENANT:SHA256HEX/);
    assert.throws(() => parseApiKeys(`:${sha256("x")}`, "f"), /tenant "" is not a valid name/);
    assert.throws(
      () => parseApiKeys(`a:${sha256("x")}\nb:${sha256("x")}`, "f"),
      /f line 2: this key is already listed for tenant "a"/,
    );
  });

  it("authenticates a key to its tenant and refuses missing, malformed and unknown keys", () => {
    const { keys, issued } = keysFor("acme", "beta", "acme");
    assert.deepEqual(keys.tenants, ["acme", "beta"]);
    assert.deepEqual(keys.authenticate(`Bearer ${issued[0]}`), { ok: true, tenant: "acme" });
    assert.deepEqual(keys.authenticate(`bearer ${issued[1]}`), { ok: true, tenant: "beta" });
    assert.deepEqual(keys.authenticate(`Bearer ${issued[2]}`), { ok: true, tenant: "acme" });
    const refused = (value: string | undefined) => {
      const result = keys.authenticate(value);
      assert.equal(result.ok, false);
      return result.ok ? "" : result.message;
    };
    assert.match(
      refused(undefined),
      /requires an API key: send `authorization: Bearer <key>` as gRPC metadata or an HTTP header/,
    );
    assert.match(refused(issued[0]), /must be "Bearer <key>"/);
    assert.match(refused(`Basic ${issued[0]}`), /must be "Bearer <key>"/);
    assert.equal(refused(`Bearer ${newApiKey()}`), "the API key is not valid");
    assert.equal(refused(`Bearer ${issued[0].slice(0, -1)}`), "the API key is not valid");
    assert.equal(refused(`Bearer ${sha256(issued[0])}`), "the API key is not valid", "the hash is not a key");
  });

  it("loads keys from a file and the inline setting together; neither configured means off", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "specgate-keys-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const [fileKey, inlineKey] = [newApiKey(), newApiKey()];
    const file = join(dir, "keys");
    writeFileSync(file, `${apiKeyLine("acme", fileKey)}\n`);
    assert.equal(loadApiKeys({}), undefined);
    const keys = loadApiKeys({ file, inline: apiKeyLine("beta", inlineKey) });
    assert.equal(keys?.size, 2);
    assert.deepEqual(keys?.authenticate(`Bearer ${inlineKey}`), { ok: true, tenant: "beta" });
    assert.deepEqual(keys?.authenticate(`Bearer ${fileKey}`), { ok: true, tenant: "acme" });
    assert.throws(() => loadApiKeys({ file: join(dir, "missing") }), /cannot read the API keys file .*missing/);
    writeFileSync(file, "# nobody yet\n");
    const none = loadApiKeys({ file });
    assert.equal(none?.size, 0, "a configured but empty file keeps authentication on");
    assert.equal(none?.authenticate(`Bearer ${fileKey}`).ok, false);
  });

  it("reloads a changed keys file without a restart, and keeps the old keys while the file is bad", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "specgate-keys-"));
    const [first, second, inline] = [newApiKey(), newApiKey(), newApiKey()];
    const file = join(dir, "keys");
    writeFileSync(file, `${apiKeyLine("acme", first)}\n`);
    const sources = { file, inline: apiKeyLine("beta", inline) };
    const keys = loadApiKeys(sources) as ApiKeys;
    const errors: string[] = [];
    const stop = watchApiKeys(keys, sources, { info: () => {}, error: (_fields, message) => errors.push(message) });
    t.after(() => {
      stop();
      rmSync(dir, { recursive: true, force: true });
    });
    const tenantOf = (key: string) => {
      const result = keys.authenticate(`Bearer ${key}`);
      return result.ok ? result.tenant : undefined;
    };

    writeFileSync(file, `${apiKeyLine("acme", second)}\n`);
    await until(() => tenantOf(second) === "acme", "a key written into the file is accepted", 5000);
    assert.equal(tenantOf(first), undefined, "the key taken out of the file is revoked");
    assert.equal(tenantOf(inline), "beta", "the inline keys stay");

    writeFileSync(file, "acme:not-a-hash\n");
    await until(() => errors.length > 0, "a bad file is reported", 5000);
    assert.equal(tenantOf(second), "acme", "a bad file leaves the previous keys in force");

    // An editor's save: a new file renamed over the old one.
    writeFileSync(join(dir, "keys.tmp"), `${apiKeyLine("gamma", first)}\n`);
    renameSync(join(dir, "keys.tmp"), file);
    await until(() => tenantOf(first) === "gamma", "a file renamed into place is read", 5000);
    assert.equal(tenantOf(second), undefined);
  });

  it("follows a Kubernetes Secret volume's update, a swap of its ..data symlink", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "specgate-keys-"));
    const [before, after] = [newApiKey(), newApiKey()];
    const version = (name: string, key: string) => {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, "keys"), `${apiKeyLine("acme", key)}\n`);
    };
    version("..v1", before);
    symlinkSync("..v1", join(dir, "..data"));
    symlinkSync(join("..data", "keys"), join(dir, "keys"));
    const sources = { file: join(dir, "keys") };
    const keys = loadApiKeys(sources) as ApiKeys;
    const stop = watchApiKeys(keys, sources, { info: () => {}, error: () => {} });
    t.after(() => {
      stop();
      rmSync(dir, { recursive: true, force: true });
    });
    assert.equal(keys.authenticate(`Bearer ${before}`).ok, true);

    version("..v2", after);
    symlinkSync("..v2", join(dir, "..data_tmp"));
    renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    await until(() => keys.authenticate(`Bearer ${after}`).ok, "the new version's key is accepted", 5000);
    assert.equal(keys.authenticate(`Bearer ${before}`).ok, false);
  });
});

describe("identifying a Gateway call", () => {
  const { keys, issued } = keysFor("acme", "beta");

  it("without keys, the body's tenant stands unverified", () => {
    assert.deepEqual(identifyCall(undefined, metadata(), "anyone"), { ok: true, tenant: "anyone" });
  });

  it("with keys, the key's tenant is the caller's; an empty or equal body tenant is accepted", () => {
    assert.deepEqual(identifyCall(keys, metadata(`Bearer ${issued[0]}`), ""), { ok: true, tenant: "acme" });
    assert.deepEqual(identifyCall(keys, metadata(`Bearer ${issued[1]}`), "beta"), { ok: true, tenant: "beta" });
  });

  it("a body naming another tenant is PERMISSION_DENIED; no, bad or several keys are UNAUTHENTICATED", () => {
    const mismatch = identifyCall(keys, metadata(`Bearer ${issued[0]}`), "beta");
    assert.equal(mismatch.ok, false);
    assert.equal(!mismatch.ok && mismatch.code, status.PERMISSION_DENIED);
    assert.match(!mismatch.ok ? mismatch.message : "", /names tenant "beta" but its API key belongs to tenant "acme"/);
    for (const m of [
      metadata(),
      metadata(`Bearer ${newApiKey()}`),
      metadata(`Bearer ${issued[0]}`, `Bearer ${issued[1]}`),
    ]) {
      const result = identifyCall(keys, m, "");
      assert.equal(!result.ok && result.code, status.UNAUTHENTICATED);
    }
  });
});
