import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { pull } from "../../services/model-builder/pull.ts";

const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

/** What the local server serves and how it misbehaves; tests change it. */
interface Behaviour {
  content: Buffer;
  etag: string;
  rangeSupport: boolean;
  /** The next this-many file responses stop halfway and drop the connection. */
  cuts: number;
  /** sha256 the hub route announces in X-Linked-Etag. */
  linkedSha256: string;
}

interface Logged {
  readonly url: string;
  readonly range: string | undefined;
  readonly status: number;
}

describe("pull against a local HTTP server", () => {
  const behaviour: Behaviour = { content: Buffer.alloc(0), etag: "", rangeSupport: true, cuts: 0, linkedSha256: "" };
  const log: Logged[] = [];
  let base = "";
  let dir = "";

  const serveFile = (req: IncomingMessage, res: ServerResponse): void => {
    const { content, etag } = behaviour;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    const ifRange = req.headers["if-range"];
    let status = 200;
    let body = content;
    const headers: Record<string, string | number> = { etag, "content-type": "application/octet-stream" };
    if (behaviour.rangeSupport) headers["accept-ranges"] = "bytes";
    if (behaviour.rangeSupport && range && (ifRange === undefined || ifRange === etag)) {
      const start = Number(range[1]);
      status = 206;
      body = content.subarray(start);
      headers["content-range"] = `bytes ${start}-${content.length - 1}/${content.length}`;
    }
    headers["content-length"] = body.length;
    log.push({ url: req.url ?? "", range: req.headers.range, status });
    res.writeHead(status, headers);
    if (behaviour.cuts > 0) {
      behaviour.cuts--;
      res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy());
    } else {
      res.end(body);
    }
  };

  const server = createServer((req, res) => {
    const url = req.url ?? "";
    if (url === "/files/model.bin" || url.startsWith("/cdn/")) return serveFile(req, res);
    const hub = /^\/owner\/repo\/resolve\/([^/]+)\/dir\/model\.bin$/.exec(url);
    if (hub) {
      log.push({ url, range: req.headers.range, status: 302 });
      res.writeHead(302, { location: `/cdn/${hub[1]}/model.bin`, "x-linked-etag": `"${behaviour.linkedSha256}"` });
      return res.end();
    }
    log.push({ url, range: req.headers.range, status: 404 });
    res.writeHead(404).end("not found");
  });

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  beforeEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = mkdtempSync(join(tmpdir(), "specgate-pull-"));
    behaviour.content = randomBytes(256 * 1024 + 17);
    behaviour.etag = '"v1"';
    behaviour.rangeSupport = true;
    behaviour.cuts = 0;
    behaviour.linkedSha256 = sha256(behaviour.content);
    log.length = 0;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const fileUrl = () => `${base}/files/model.bin`;
  const target = () => join(dir, "model.bin");
  const fast = { retryDelayMs: 0 };

  it("downloads a file, verifies the expected checksum and reports progress", async () => {
    const progress: number[] = [];
    const result = await pull(fileUrl(), dir, {
      expectedSha256: sha256(behaviour.content),
      onProgress: ({ bytes, total }) => {
        assert.equal(total, behaviour.content.length);
        progress.push(bytes);
      },
    });
    assert.deepEqual(readFileSync(target()), behaviour.content);
    assert.equal(result.path, target());
    assert.equal(result.bytes, behaviour.content.length);
    assert.equal(result.sha256, sha256(behaviour.content));
    assert.equal(result.verifiedBy, "expected");
    assert.equal(result.cached, false);
    assert.equal(progress.at(-1), behaviour.content.length);
    assert.deepEqual(
      progress,
      [...progress].sort((a, b) => a - b),
    );
    assert.ok(!existsSync(`${target()}.partial`));
  });

  it("returns the unverified digest when neither the caller nor the server gives one", async () => {
    const result = await pull(fileUrl(), dir);
    assert.equal(result.verifiedBy, "none");
    assert.equal(result.sha256, sha256(behaviour.content));
  });

  it("resumes with a Range request after the server cuts the connection midway", async () => {
    behaviour.cuts = 1;
    await pull(fileUrl(), dir, { ...fast, expectedSha256: sha256(behaviour.content) });
    assert.deepEqual(readFileSync(target()), behaviour.content);
    assert.equal(log.length, 2);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(log[1].range ?? "")?.[1]);
    assert.ok(resumedAt > 0 && resumedAt < behaviour.content.length, `resumed at ${log[1].range}`);
    assert.equal(log[1].status, 206);
  });

  it("resumes a download interrupted in an earlier run from its .partial file", async () => {
    behaviour.cuts = 1;
    await assert.rejects(pull(fileUrl(), dir, { retries: 0 }), /connection to .*model\.bin dropped after \d+ bytes/);
    const partialSize = statSync(`${target()}.partial`).size;
    assert.ok(partialSize > 0 && partialSize < behaviour.content.length);
    assert.ok(!existsSync(target()));
    const result = await pull(fileUrl(), dir, { expectedSha256: sha256(behaviour.content) });
    assert.deepEqual(readFileSync(target()), behaviour.content);
    assert.equal(log[1].range, `bytes=${partialSize}-`);
    assert.equal(result.cached, false);
  });

  it("starts over cleanly when the server ignores Range", async () => {
    behaviour.cuts = 1;
    behaviour.rangeSupport = false;
    await assert.rejects(pull(fileUrl(), dir, { retries: 0 }));
    assert.ok(statSync(`${target()}.partial`).size > 0);
    await pull(fileUrl(), dir, { expectedSha256: sha256(behaviour.content) });
    assert.deepEqual(readFileSync(target()), behaviour.content);
    assert.ok(log[1].range !== undefined);
    assert.equal(log[1].status, 200);
  });

  it("starts over when the file changed on the server since the partial download (If-Range)", async () => {
    behaviour.cuts = 1;
    await assert.rejects(pull(fileUrl(), dir, { retries: 0 }));
    behaviour.content = randomBytes(100 * 1024);
    behaviour.etag = '"v2"';
    await pull(fileUrl(), dir, { expectedSha256: sha256(behaviour.content) });
    assert.deepEqual(readFileSync(target()), behaviour.content);
    assert.equal(log[1].status, 200);
  });

  it("fails on a checksum mismatch, naming both digests, and leaves no file behind", async () => {
    const wrong = "0".repeat(64);
    await assert.rejects(
      pull(fileUrl(), dir, { expectedSha256: wrong }),
      new RegExp(
        `checksum mismatch for .*model\\.bin: expected sha256 ${wrong}, downloaded file has ${sha256(behaviour.content)}`,
      ),
    );
    assert.ok(!existsSync(target()));
    assert.ok(!existsSync(`${target()}.partial`));
  });

  it("reports an HTTP error with its status and URL", async () => {
    await assert.rejects(
      pull(`${base}/files/missing.bin`, dir),
      new RegExp(`HTTP 404 Not Found for ${base}/files/missing.bin`),
    );
    assert.ok(!existsSync(join(dir, "missing.bin")));
  });

  it("resolves owner/repo/file against the hub base URL and checks the sha256 of X-Linked-Etag", async () => {
    const result = await pull("owner/repo/dir/model.bin", dir, { hubUrl: base });
    assert.deepEqual(readFileSync(target()), behaviour.content);
    assert.equal(result.verifiedBy, "etag");
    assert.deepEqual(
      log.map((entry) => entry.url),
      ["/owner/repo/resolve/main/dir/model.bin", "/cdn/main/model.bin"],
    );
  });

  it("takes the hub base URL from SPECGATE_HUB_URL and a revision after @", async () => {
    process.env.SPECGATE_HUB_URL = base;
    try {
      await pull("owner/repo@v1.0/dir/model.bin", dir);
    } finally {
      delete process.env.SPECGATE_HUB_URL;
    }
    assert.equal(log[0].url, "/owner/repo/resolve/v1.0/dir/model.bin");
  });

  it("rejects a download whose bytes disagree with the hub's sha256", async () => {
    behaviour.linkedSha256 = "a".repeat(64);
    await assert.rejects(
      pull("owner/repo/dir/model.bin", dir, { hubUrl: base }),
      /the server's ETag says sha256 a{64}/,
    );
    assert.ok(!existsSync(target()));
  });

  it("does not download a file that is already there", async () => {
    writeFileSync(target(), behaviour.content);
    const result = await pull(fileUrl(), dir, { expectedSha256: sha256(behaviour.content) });
    assert.equal(result.cached, true);
    assert.equal(log.length, 0);
  });
});
