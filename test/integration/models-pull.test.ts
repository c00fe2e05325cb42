import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { defaultSourceDir } from "../../services/model-builder/models-build.ts";
import { greedyDecode } from "../../services/runtime/greedy.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import { loadTokenizer } from "../../services/runtime/tokenizer/load.ts";

const run = promisify(execFile);
const CLI = join(import.meta.dirname, "../../services/model-builder/models-cli.ts");
const FILES: Record<string, Buffer> = {
  "/ckpt/stories260K.v1.bin": readFileSync(join(defaultSourceDir(), "stories260K.v1.bin")),
  "/ckpt/tok512.bin": readFileSync(join(defaultSourceDir(), "tok512.bin")),
};

describe("npm run models -- --pull", () => {
  let server: Server;
  let base: string;
  let out: string;
  before(async () => {
    out = await mkdtemp(join(tmpdir(), "models-pull-"));
    server = createServer((req, res) => {
      const body = FILES[req.url ?? ""];
      res.writeHead(body ? 200 : 404, { "content-length": body?.length ?? 0 });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(out, { recursive: true, force: true });
  });

  it("downloads a llama2.c checkpoint and its tokenizer and converts them to a working model directory", async () => {
    const sha = createHash("sha256").update(FILES["/ckpt/stories260K.v1.bin"]).digest("hex");
    const args = ["--pull", `${base}/ckpt/stories260K.v1.bin`, "--tokenizer", `${base}/ckpt/tok512.bin`];
    await run(process.execPath, ["--import", "tsx", CLI, "--out", out, "--sha256", sha, ...args]);
    const dir = join(out, "stories260k.v1");
    assert.ok(existsSync(join(dir, "tokenizer.bin")));
    const lm = await OnnxCausalLM.load(dir);
    try {
      const { tokens } = await greedyDecode(lm, [1], { maxTokens: 12 });
      assert.match((await loadTokenizer(dir)).decode(tokens), /^ ?Once upon a time, there was a little girl/);
    } finally {
      await lm.close();
    }
  });

  it("fails with a clear message when the checksum does not match", async () => {
    const args = [
      "--out",
      out,
      "--pull",
      `${base}/ckpt/stories260K.v1.bin`,
      "--sha256",
      "0".repeat(64),
      "--name",
      "bad",
    ];
    await assert.rejects(run(process.execPath, ["--import", "tsx", CLI, ...args]), (error: { stderr: string }) => {
      assert.match(error.stderr, /models: .*sha256/i);
      return true;
    });
    assert.ok(!existsSync(join(out, "bad")));
  });
});
