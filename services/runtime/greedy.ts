/** Target-only greedy decoding: the baseline speculation must reproduce token for token, and be faster than. */
import type { CausalLM } from "./causal-lm.ts";

/** Index of the largest of the `width` logits starting at `offset` (the first one on ties). */
export function argmax(logits: Float32Array, offset = 0, width = logits.length - offset): number {
  // The best value kept in a local: a third faster over a 32000-token vocabulary than reading it back each time.
  let best = offset;
  let bestValue = logits[offset];
  const end = offset + width;
  for (let i = offset + 1; i < end; i++) {
    const value = logits[i];
    if (value > bestValue) {
      bestValue = value;
      best = i;
    }
  }
  return best - offset;
}

export interface GreedyOptions {
  readonly maxTokens: number;
  /** Stop after generating the model's EOS token (it is included in the output). Default true. */
  readonly stopAtEos?: boolean;
  /** Cache id to decode under; the cache is released at the end. Default a fresh id. */
  readonly sequenceId?: string;
}

export interface GreedyResult {
  /** Generated ids, prompt excluded. */
  readonly tokens: number[];
  /** Time of the prompt's forward (which also yields the first token). */
  readonly prefillMs: number;
  /** Time of each later single-token step. */
  readonly stepMs: number[];
}

let nextSequence = 0;

export async function greedyDecode(
  lm: CausalLM,
  prompt: readonly number[],
  options: GreedyOptions,
): Promise<GreedyResult> {
  if (prompt.length === 0) throw new RangeError("greedy decoding needs a non-empty prompt");
  const { vocabSize, eosTokenId, contextLength } = lm.info;
  const sequenceId = options.sequenceId ?? `greedy-${nextSequence++}`;
  const maxTokens = Math.min(options.maxTokens, contextLength - prompt.length);
  const tokens: number[] = [];
  const stepMs: number[] = [];
  let prefillMs = 0;
  try {
    let input = prompt;
    while (tokens.length < maxTokens) {
      const started = performance.now();
      const [logits] = await lm.forward([{ sequenceId, tokens: input }]);
      const token = argmax(logits, (input.length - 1) * vocabSize, vocabSize);
      const elapsed = performance.now() - started;
      if (tokens.length === 0) prefillMs = elapsed;
      else stepMs.push(elapsed);
      tokens.push(token);
      if (token === eosTokenId && options.stopAtEos !== false) break;
      input = [token];
    }
  } finally {
    lm.release(sequenceId);
  }
  return { tokens, prefillMs, stepMs };
}
