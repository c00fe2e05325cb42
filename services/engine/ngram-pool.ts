/**
 * Lookahead decoding's n-gram pool (Fu et al. 2024): n-grams seen in the prompt, in the generated text and in the
 * Jacobi trajectory, kept as continuations keyed by their first token so that a round can look up the n-grams that
 * start with the sequence's last token. Each key holds at most `perKey` continuations, the most recently seen first
 * (an n-gram seen again moves to the front; the least recently seen one falls out). Pure: no I/O.
 */

export class NgramPool {
  readonly #byFirst = new Map<number, number[][]>();

  /** `n`: tokens per n-gram (the key and n − 1 continuation tokens); `perKey`: continuations kept per key. */
  constructor(
    readonly n: number,
    readonly perKey: number,
  ) {
    if (!Number.isInteger(n) || n < 2) throw new RangeError(`an n-gram pool needs n ≥ 2, got ${n}`);
    if (!Number.isInteger(perKey) || perKey < 1) throw new RangeError(`perKey must be ≥ 1, got ${perKey}`);
  }

  /** Adds one n-gram (exactly n tokens). */
  add(ngram: readonly number[]): void {
    if (ngram.length !== this.n) throw new RangeError(`a ${this.n}-gram pool got ${ngram.length} tokens`);
    const continuation = ngram.slice(1);
    const list = this.#byFirst.get(ngram[0]) ?? [];
    const seen = list.findIndex((c) => c.every((token, i) => token === continuation[i]));
    if (seen >= 0) list.splice(seen, 1);
    list.unshift(continuation);
    if (list.length > this.perKey) list.length = this.perKey;
    this.#byFirst.set(ngram[0], list);
  }

  /** Adds every n-gram of a token sequence, in order (so the last ones end up the most recent). */
  addText(tokens: readonly number[]): void {
    for (let i = 0; i + this.n <= tokens.length; i++) this.add(tokens.slice(i, i + this.n));
  }

  /** The continuations (n − 1 tokens each) of the n-grams that start with `first`, most recent first. */
  continuations(first: number): readonly (readonly number[])[] {
    return this.#byFirst.get(first) ?? [];
  }

  /** Continuations held in all. */
  get size(): number {
    let count = 0;
    for (const list of this.#byFirst.values()) count += list.length;
    return count;
  }
}
