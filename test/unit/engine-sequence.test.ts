import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { SequenceState } from "../../services/engine/sequence.ts";
import { Llama2cTokenizer } from "../../services/runtime/tokenizer/llama2c.ts";
import { modelDataFile } from "../support/model-data.ts";

const tokenizer = Llama2cTokenizer.fromBytes(readFileSync(modelDataFile("tok512.bin")));
const EOS = 2;
const prompt = [1, ...tokenizer.encode("Once upon a time")];

/** Commits `tokens` one round at a time in the given round sizes; returns the tokens kept. */
function commitInRounds(sequence: SequenceState, tokens: number[], sizes: number[]): number[] {
  const kept: number[] = [];
  let at = 0;
  for (const size of sizes) {
    if (sequence.finished || at >= tokens.length) break;
    kept.push(...sequence.commit(tokens.slice(at, at + size)).tokens);
    at += size;
  }
  return kept;
}

describe("SequenceState", () => {
  const text = tokenizer.encode("there was a little girl. She said: the end. Then she slept.");

  it("ends at the same token whether tokens arrive one by one or in rounds", () => {
    for (const stop of [
      { maxNewTokens: 7, contextLength: 512 },
      { maxNewTokens: 100, contextLength: prompt.length + 9 },
      { maxNewTokens: 100, contextLength: 512, eosTokenId: text[5] },
      { maxNewTokens: 100, contextLength: 512, stopStrings: ["the end"] },
      { maxNewTokens: 100, contextLength: 512, stopStrings: ["girl. S"] },
    ]) {
      const plain = new SequenceState(prompt, stop, tokenizer);
      const one = commitInRounds(
        plain,
        text,
        text.map(() => 1),
      );
      const rounds = new SequenceState(prompt, stop, tokenizer);
      const many = commitInRounds(rounds, text, [3, 5, 1, 4, 6, 2, 9, 9, 9, 9]);
      assert.deepEqual(many, one, JSON.stringify(stop));
      assert.equal(rounds.finishReason, plain.finishReason);
      assert.equal(rounds.text, plain.text);
    }
  });

  it("reports why it finished, keeping EOS in the tokens but the stop string out of the text", () => {
    const byLength = new SequenceState(prompt, { maxNewTokens: 3, contextLength: 512 });
    assert.deepEqual(byLength.commit([10, 11, 12, 13]).tokens, [10, 11, 12]);
    assert.equal(byLength.finishReason, "length");

    const byEos = new SequenceState(prompt, { maxNewTokens: 10, contextLength: 512, eosTokenId: EOS });
    assert.deepEqual(byEos.commit([10, EOS, 12]).tokens, [10, EOS]);
    assert.equal(byEos.finishReason, "eos");

    const byContext = new SequenceState(prompt, { maxNewTokens: 10, contextLength: prompt.length + 2 });
    assert.deepEqual(byContext.commit([10, 11, 12]).tokens, [10, 11]);
    assert.equal(byContext.finishReason, "context_length");

    const byStop = new SequenceState(
      prompt,
      { maxNewTokens: 100, contextLength: 512, stopStrings: ["the end"] },
      tokenizer,
    );
    const kept = byStop.commit(text).tokens;
    assert.equal(byStop.finishReason, "stop");
    assert.equal(byStop.text, " there was a little girl. She said: ");
    assert.ok(tokenizer.decode(kept).endsWith("the end"), tokenizer.decode(kept));
  });

  it("budgets draft tokens so a round never passes max tokens or the context", () => {
    const sequence = new SequenceState(prompt, { maxNewTokens: 5, contextLength: 512 });
    assert.equal(sequence.draftBudget(), 4);
    sequence.commit([10, 11, 12]);
    assert.equal(sequence.draftBudget(), 1);
    const tight = new SequenceState(prompt, { maxNewTokens: 50, contextLength: prompt.length + 3 });
    assert.equal(tight.draftBudget(), 2);
  });

  it("rejects an empty prompt, a prompt filling the context and max tokens below 1", () => {
    assert.throws(() => new SequenceState([], { maxNewTokens: 1, contextLength: 8 }), /empty/);
    assert.throws(() => new SequenceState([1, 2, 3], { maxNewTokens: 1, contextLength: 3 }), /no room/);
    assert.throws(() => new SequenceState([1], { maxNewTokens: 0, contextLength: 8 }), /at least 1/);
    assert.throws(() => new SequenceState([1], { maxNewTokens: 5, contextLength: 8, stopStrings: ["x"] }), /tokenizer/);
  });
});
