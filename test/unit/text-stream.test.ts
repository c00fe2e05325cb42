import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { HfTokenizer } from "../../services/runtime/tokenizer/hf.ts";
import { Llama2cTokenizer } from "../../services/runtime/tokenizer/llama2c.ts";
import { TextStream } from "../../services/runtime/tokenizer/text-stream.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";
import { modelDataFile } from "../support/model-data.ts";
import { llamaStyleTokenizerConfig, llamaStyleTokenizerJson } from "../support/tokenizer-json.ts";

const llama2c = Llama2cTokenizer.fromBytes(readFileSync(modelDataFile("tok512.bin")));
const hf = new HfTokenizer(llamaStyleTokenizerJson(), llamaStyleTokenizerConfig);

/** Pushes ids one at a time and returns the deltas, the flush last. */
function stream(tokenizer: Tokenizer, ids: readonly number[], context: readonly number[] = []): string[] {
  const text = new TextStream(tokenizer, context);
  const deltas = ids.map((id) => text.push(id));
  deltas.push(text.flush());
  return deltas;
}

const wellFormed = (s: string) => !s.includes("\uFFFD") && Buffer.from(s, "utf8").toString("utf8") === s;

for (const [name, tokenizer] of [
  ["llama2.c", llama2c],
  ["tokenizer.json", hf],
] as const) {
  describe(`TextStream over ${name}`, () => {
    it("holds back the bytes of an emoji split over byte tokens until it completes", () => {
      const ids = tokenizer.encode("hello 😀 world", { bos: true });
      const emoji = ids.indexOf(0xf0 + 3);
      assert.ok(emoji > 0, "the emoji is encoded as byte tokens");
      const deltas = stream(tokenizer, ids);
      assert.deepEqual(deltas.slice(emoji, emoji + 3), ["", "", ""]);
      assert.ok(deltas[emoji + 3].endsWith("😀"));
      for (const delta of deltas) assert.ok(wellFormed(delta), JSON.stringify(delta));
      assert.equal(deltas.join(""), tokenizer.decode(ids));
      assert.equal(deltas.join(""), "hello 😀 world");
    });

    it("concatenates to decode(ids) for mixed unicode text, pushed one id or several at a time", () => {
      const ids = tokenizer.encode("héllo wörld 日本 😀🎉 hello", { bos: true });
      assert.equal(stream(tokenizer, ids).join(""), tokenizer.decode(ids));
      const text = new TextStream(tokenizer);
      let joined = "";
      for (let i = 0; i < ids.length; i += 3) joined += text.push(ids.slice(i, i + 3));
      assert.equal(joined + text.flush(), tokenizer.decode(ids));
    });

    it("keeps the leading space of the first generated token when given the prompt as context", () => {
      const prompt = tokenizer.encode("hello", { bos: true });
      const generated = tokenizer.encode("world");
      const deltas = stream(tokenizer, generated, prompt);
      assert.equal(deltas.join(""), " world");
      assert.equal(deltas.join(""), tokenizer.decode([...prompt, ...generated]).slice(tokenizer.decode(prompt).length));
    });

    it("flushes an incomplete character at the end as U+FFFD, as decode does", () => {
      const ids = [...tokenizer.encode("hello"), 0xf0 + 3, 0x9f + 3];
      const deltas = stream(tokenizer, ids);
      assert.deepEqual(deltas.slice(-3), ["", "", "\uFFFD"]);
      assert.equal(deltas.join(""), tokenizer.decode(ids));
    });
  });
}

describe("TextStream over the stories260K tokenizer", () => {
  it("streams a story generated from BOS without the dummy prefix space", () => {
    const story = llama2c.encode("Once upon a time, there was a little girl named Lily.");
    assert.equal(
      stream(llama2c, story, [llama2c.bosId]).join(""),
      "Once upon a time, there was a little girl named Lily.",
    );
  });
});
