/**
 * The contract every tokenizer offers to the runtime, the engine and the gateway. Implementations: llama2.c
 * `tokenizer.bin` (llama2c.ts) and Hugging Face `tokenizer.json` (hf.ts); `loadTokenizer` (load.ts) picks one for a
 * model directory.
 */

export interface EncodeOptions {
  /** Prepend the BOS token (ignored when the tokenizer has none). Default false. */
  readonly bos?: boolean;
  /** Append the EOS token (ignored when the tokenizer has none). Default false. */
  readonly eos?: boolean;
}

export interface Tokenizer {
  /** Token ids of `text`; special tokens are added only as `options` ask. */
  encode(text: string, options?: EncodeOptions): number[];
  /**
   * Text of `ids` decoded together (so a character split across byte tokens comes out whole). Special tokens such as
   * BOS and EOS decode to nothing. For text that continues a prompt, stream with `TextStream` and the prompt as
   * context: tokenizers strip the leading space of the first token of a text.
   */
  decode(ids: readonly number[]): string;
  /** Beginning-of-sequence id, undefined when the tokenizer has none (e.g. GPT-2 style vocabularies). */
  readonly bosId: number | undefined;
  /** End-of-sequence id, undefined when the tokenizer declares none. */
  readonly eosId: number | undefined;
  /** Number of ids the tokenizer can produce (largest id + 1). */
  readonly vocabSize: number;
}
