/**
 * One request's committed tokens and its stop conditions: how many tokens the next round may add, and which of a
 * round's tokens survive max tokens, EOS, stop strings and the context length. Tokens are judged one at a time, in
 * order, exactly as plain decoding would meet them, so speculative and plain generation end at the same token.
 */

import { TextStream } from "../runtime/tokenizer/text-stream.ts";
import type { Tokenizer } from "../runtime/tokenizer/tokenizer.ts";
import { StopFilter } from "./stop.ts";

export type FinishReason = "length" | "eos" | "stop" | "context_length";

export interface StopConditions {
  /** Generated tokens at most (≥ 1). */
  readonly maxNewTokens: number;
  /** Prompt plus generated tokens at most (the model's context length). */
  readonly contextLength: number;
  /** Generation ends after this token (kept in the output, like runtime/greedy.ts); undefined: never. */
  readonly eosTokenId?: number;
  /** Generation ends at the token that completes one of these in the text (the text stops before it). */
  readonly stopStrings?: readonly string[];
}

/** What a commit added: the surviving tokens and the text that became final with them. */
export interface Committed {
  readonly tokens: number[];
  readonly text: string;
}

export class SequenceState {
  readonly tokens: number[];
  readonly promptLength: number;
  finishReason: FinishReason | undefined;
  /** Generated text so far (without a matched stop string); empty when no tokenizer was given. */
  text = "";
  private readonly textStream: TextStream | undefined;
  private readonly stopFilter: StopFilter | undefined;

  constructor(
    prompt: readonly number[],
    private readonly stop: StopConditions,
    tokenizer?: Pick<Tokenizer, "decode">,
  ) {
    if (prompt.length === 0) throw new RangeError("the prompt is empty");
    if (prompt.length >= stop.contextLength) {
      throw new RangeError(
        `the prompt (${prompt.length} tokens) leaves no room in the context (${stop.contextLength})`,
      );
    }
    if (!(stop.maxNewTokens >= 1)) throw new RangeError(`max new tokens must be at least 1, got ${stop.maxNewTokens}`);
    const stops = stop.stopStrings?.filter((s) => s.length > 0) ?? [];
    if (stops.length > 0 && !tokenizer) throw new Error("stop strings need a tokenizer to read the text");
    this.tokens = [...prompt];
    this.promptLength = prompt.length;
    this.textStream = tokenizer ? new TextStream(tokenizer, prompt) : undefined;
    this.stopFilter = tokenizer ? new StopFilter(stops) : undefined;
  }

  get generated(): number[] {
    return this.tokens.slice(this.promptLength);
  }

  get finished(): boolean {
    return this.finishReason !== undefined;
  }

  /** Draft tokens worth proposing next round: the round adds at most K+1 tokens, within both limits. */
  draftBudget(): number {
    const byLength = this.stop.maxNewTokens - (this.tokens.length - this.promptLength) - 1;
    const byContext = this.stop.contextLength - this.tokens.length - 1;
    return Math.max(0, Math.min(byLength, byContext));
  }

  /** Appends a round's tokens one by one until a stop condition ends the sequence. */
  commit(tokens: readonly number[]): Committed {
    const kept: number[] = [];
    let text = "";
    for (const token of tokens) {
      if (this.finished) break;
      this.tokens.push(token);
      kept.push(token);
      if (this.textStream && this.stopFilter) {
        const piece = this.stopFilter.push(this.textStream.push(token));
        text += piece.text;
        if (piece.stopped) this.finishReason = "stop";
      }
      if (this.finished) break;
      if (token === this.stop.eosTokenId) this.finishReason = "eos";
      else if (this.tokens.length - this.promptLength >= this.stop.maxNewTokens) this.finishReason = "length";
      else if (this.tokens.length >= this.stop.contextLength) this.finishReason = "context_length";
    }
    if (this.textStream && this.stopFilter && this.finished && this.finishReason !== "stop") {
      text += this.stopFilter.push(this.textStream.flush()).text + this.stopFilter.flush();
    }
    this.text += text;
    return { tokens: kept, text };
  }
}
