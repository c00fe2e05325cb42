import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { HfTokenizer } from "../../services/runtime/tokenizer/hf.ts";
import { Llama2cTokenizer } from "../../services/runtime/tokenizer/llama2c.ts";
import { loadTokenizer } from "../../services/runtime/tokenizer/load.ts";
import { modelDataFile } from "../support/model-data.ts";
import { llamaStyleTokenizerConfig, llamaStyleTokenizerJson } from "../support/tokenizer-json.ts";

const TOK512 = pathToFileURL(modelDataFile("tok512.bin"));

describe("loadTokenizer", () => {
  const root = mkdtempSync(join(tmpdir(), "specgate-tokenizer-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  /** A model directory holding `files` (contents, or a file to copy). */
  const dir = (name: string, files: Record<string, string | URL>) => {
    const path = join(root, name);
    mkdirSync(path);
    for (const [file, content] of Object.entries(files)) {
      if (content instanceof URL) copyFileSync(content, join(path, file));
      else writeFileSync(join(path, file), content);
    }
    return path;
  };

  it("loads tokenizer.bin (llama2.c) when there is no tokenizer.json", async () => {
    const tokenizer = await loadTokenizer(dir("bin", { "tokenizer.bin": TOK512 }));
    assert.ok(tokenizer instanceof Llama2cTokenizer);
    assert.equal(tokenizer.decode(tokenizer.encode("Once upon a time", { bos: true })), "Once upon a time");
  });

  it("prefers tokenizer.json, with tokenizer_config.json for BOS/EOS", async () => {
    const tokenizer = await loadTokenizer(
      dir("json", {
        "tokenizer.bin": TOK512,
        "tokenizer.json": JSON.stringify(llamaStyleTokenizerJson()),
        "tokenizer_config.json": JSON.stringify(llamaStyleTokenizerConfig),
      }),
    );
    assert.ok(tokenizer instanceof HfTokenizer);
    assert.equal(tokenizer.bosId, 1);
    assert.equal(tokenizer.decode(tokenizer.encode("hello world")), "hello world");
  });

  it("says what it looked for when the directory has no tokenizer", async () => {
    await assert.rejects(loadTokenizer(dir("empty", {})), /no tokenizer in .*tokenizer\.json.*tokenizer\.bin/);
  });

  it("names the file that holds invalid JSON", async () => {
    await assert.rejects(
      loadTokenizer(dir("bad", { "tokenizer.json": "{ not json" })),
      /tokenizer\.json: invalid JSON/,
    );
  });
});
