import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { Llama2cTokenizer } from "../../services/runtime/tokenizer/llama2c.ts";
import { type MergeVocabulary, mergeByScore } from "../../services/runtime/tokenizer/score-bpe.ts";
import { modelDataFile } from "../support/model-data.ts";

const bytes = readFileSync(modelDataFile("tok512.bin"));
const tokenizer = Llama2cTokenizer.fromBytes(bytes);

/** The tokenizer file read independently, for the reference encoder below. */
function readVocabulary(): { pieces: string[]; scores: number[] } {
  const pieces: string[] = [];
  const scores: number[] = [];
  for (let o = 4; o < bytes.length; ) {
    scores.push(bytes.readFloatLE(o));
    const length = bytes.readInt32LE(o + 4);
    pieces.push(bytes.toString("latin1", o + 8, o + 8 + length));
    o += 8 + length;
  }
  return { pieces, scores };
}

/** llama2.c run.c's encode, transcribed literally (quadratic rescans), as the oracle. */
function referenceEncode(text: string): number[] {
  const { pieces, scores } = readVocabulary();
  const lookup = (s: string) => pieces.indexOf(s);
  const tokens: number[] = [];
  if (text.length > 0) tokens.push(lookup(" "));
  const utf8 = Buffer.from(text, "utf8");
  let buffer: number[] = [];
  for (let i = 0; i < utf8.length; i++) {
    if ((utf8[i] & 0xc0) !== 0x80) buffer = [];
    buffer.push(utf8[i]);
    if (i + 1 < utf8.length && (utf8[i + 1] & 0xc0) === 0x80 && buffer.length < 4) continue;
    const id = lookup(Buffer.from(buffer).toString("latin1"));
    if (id !== -1) tokens.push(id);
    else for (const b of buffer) tokens.push(b + 3);
    buffer = [];
  }
  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i < tokens.length - 1; i++) {
      const id = lookup(pieces[tokens[i]] + pieces[tokens[i + 1]]);
      if (id !== -1 && scores[id] > bestScore) {
        bestScore = scores[id];
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens.splice(bestIdx, 2, bestId);
  }
  return tokens;
}

const SAMPLES = [
  "Once upon a time",
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
  'Tim said, "Look!"\nThe dog ran.  Two  spaces\tand a tab.',
  "Café, naïve, señor, Ärger — déjà vu…",
  "日本語のテキスト and 中文",
  "emoji 😀🎉👍🏽 and a family 👨‍👩‍👧",
  "",
  " ",
  "a",
];

describe("llama2.c tokenizer (tok512.bin)", () => {
  it("reads the header and the 512 tokens with BOS 1, EOS 2", () => {
    assert.equal(tokenizer.vocabSize, 512);
    assert.equal(tokenizer.maxTokenLength, 7);
    assert.equal(tokenizer.bosId, 1);
    assert.equal(tokenizer.eosId, 2);
  });

  it("encodes 'Once upon a time' to the pieces ' Once', ' upon', ' a', ' time' and back exactly", () => {
    const ids = tokenizer.encode("Once upon a time", { bos: true });
    assert.deepEqual(
      ids.slice(1).map((id) => tokenizer.decode([id])),
      [" Once", " upon", " a", " time"],
    );
    assert.equal(ids[0], 1);
    assert.equal(tokenizer.decode(ids), "Once upon a time");
  });

  it("encodes exactly as llama2.c's encode does", () => {
    for (const text of SAMPLES) assert.deepEqual(tokenizer.encode(text), referenceEncode(text), JSON.stringify(text));
  });

  it("round-trips ASCII and unicode text (the token after BOS loses the dummy prefix space)", () => {
    for (const text of SAMPLES) {
      assert.equal(tokenizer.decode(tokenizer.encode(text, { bos: true })), text);
      // Without BOS in front, the dummy prefix space stays.
      assert.equal(tokenizer.decode(tokenizer.encode(text)), text.length > 0 ? ` ${text}` : "");
    }
  });

  it("falls back to byte tokens <0x00>..<0xFF> (ids 3..258) for characters outside the vocabulary", () => {
    const ids = tokenizer.encode("😀");
    assert.deepEqual(ids.slice(-4), [0xf0 + 3, 0x9f + 3, 0x98 + 3, 0x80 + 3]);
    // One byte token alone is not a character; decoded together they are.
    assert.equal(tokenizer.decode(ids.slice(-4)), "😀");
    assert.equal(tokenizer.decode([0xf0 + 3]), "\uFFFD");
  });

  it("adds BOS and EOS only when asked", () => {
    assert.deepEqual(tokenizer.encode("", { bos: true, eos: true }), [1, 2]);
    assert.deepEqual(tokenizer.encode(""), []);
    assert.equal(tokenizer.encode("The end", { eos: true }).at(-1), 2);
  });

  it("rejects ids outside the vocabulary and malformed files", () => {
    assert.throws(() => tokenizer.decode([512]), /outside the vocabulary/);
    assert.throws(() => Llama2cTokenizer.fromBytes(bytes.subarray(0, 110), "cut.bin"), /cut.bin: .*past the end/);
    assert.throws(() => Llama2cTokenizer.fromBytes(new Uint8Array(2)), /too short/);
  });
});

describe("score-ordered BPE merging", () => {
  /** Vocabulary lookups made while encoding: a machine-independent measure of the merge work. */
  function lookupsFor(text: string): number {
    const { pieces, scores } = readVocabulary();
    let lookups = 0;
    const idOf = new Map<string, number>();
    pieces.forEach((p, id) => {
      if (!idOf.has(p)) idOf.set(p, id);
    });
    const counting: MergeVocabulary = {
      pieces,
      scores,
      idOf: {
        get: (key: string) => {
          lookups++;
          return idOf.get(key);
        },
      } as ReadonlyMap<string, number>,
    };
    const symbols = [...Buffer.from(text, "latin1")].map((b) => idOf.get(String.fromCharCode(b)) ?? 0);
    mergeByScore(symbols, counting);
    return lookups;
  }

  it("does work linear in the prompt length, not quadratic", () => {
    const sentence = "Once upon a time, there was a little girl named Lily. She loved to play outside. ";
    const small = lookupsFor(sentence.repeat(10));
    const large = lookupsFor(sentence.repeat(80));
    // Eight times the text: a quadratic rescan would do about 64 times the lookups.
    assert.ok(large / small < 10, `lookups grew ${large / small}x for 8x the text`);
  });

  it("encodes a long prompt the same as the reference and decodes it back", () => {
    const long = SAMPLES.join(" ").repeat(5);
    assert.deepEqual(tokenizer.encode(long), referenceEncode(long));
    assert.equal(tokenizer.decode(tokenizer.encode(long, { bos: true })), long);
  });
});
