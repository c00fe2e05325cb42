import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HfTokenizer } from "../../services/runtime/tokenizer/hf.ts";
import { llamaStyleTokenizerConfig, llamaStyleTokenizerJson } from "../support/tokenizer-json.ts";

describe("Hugging Face tokenizer.json", () => {
  const tokenizer = new HfTokenizer(llamaStyleTokenizerJson(), llamaStyleTokenizerConfig);
  const id = (piece: string) =>
    (llamaStyleTokenizerJson() as { model: { vocab: Record<string, number> } }).model.vocab[piece];

  it("takes BOS and EOS from tokenizer_config.json and the vocabulary size from the model", () => {
    assert.equal(tokenizer.bosId, 1);
    assert.equal(tokenizer.eosId, 2);
    assert.equal(tokenizer.vocabSize, 3 + 256 + 9 + 10);
  });

  it("encodes with the BPE merges, and adds BOS/EOS only when asked", () => {
    assert.deepEqual(tokenizer.encode("hello world"), [id("▁hello"), id("▁world")]);
    assert.deepEqual(tokenizer.encode("hello", { bos: true, eos: true }), [1, id("▁hello"), 2]);
  });

  it("falls back to byte tokens and round-trips unicode text", () => {
    const ids = tokenizer.encode("hello é 😀");
    assert.deepEqual(ids.slice(-4), [0xf0 + 3, 0x9f + 3, 0x98 + 3, 0x80 + 3]);
    for (const text of ["hello world", "hello é 😀", "wörld 日本"]) {
      assert.equal(tokenizer.decode(tokenizer.encode(text, { bos: true, eos: true })), text);
    }
  });

  it("decodes an empty list to the empty string", () => {
    assert.equal(tokenizer.decode([]), "");
  });

  it("works without tokenizer_config.json (no BOS/EOS known)", () => {
    const bare = new HfTokenizer(llamaStyleTokenizerJson());
    assert.equal(bare.bosId, undefined);
    assert.deepEqual(bare.encode("hello", { bos: true }), [id("▁hello")]);
  });

  it("names the file when the tokenizer cannot be built", () => {
    assert.throws(() => new HfTokenizer({ model: { type: "Nope" } }, {}, "/m/tokenizer.json"), /\/m\/tokenizer.json/);
  });
});
