/**
 * Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) through the maintained `@huggingface/tokenizers` library,
 * for the models users bring.
 */
import { Tokenizer as HfLibraryTokenizer } from "@huggingface/tokenizers";
import type { EncodeOptions, Tokenizer } from "./tokenizer.ts";

/** A special token as tokenizer_config.json writes it: a string or an AddedToken object. */
export type SpecialToken = string | { content?: string } | null | undefined;

export interface HfTokenizerConfig {
  readonly bos_token?: SpecialToken;
  readonly eos_token?: SpecialToken;
  readonly clean_up_tokenization_spaces?: boolean;
  readonly [key: string]: unknown;
}

/** The text of a special token, undefined when the config names none. */
export function tokenContent(token: SpecialToken): string | undefined {
  return typeof token === "string" ? token : (token?.content ?? undefined);
}

export class HfTokenizer implements Tokenizer {
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly vocabSize: number;
  private readonly inner: HfLibraryTokenizer;
  private readonly cleanUpSpaces: boolean;

  /** `tokenizerJson` and `config` are the parsed files; `source` names them in error messages. */
  constructor(tokenizerJson: object, config: HfTokenizerConfig = {}, source = "tokenizer.json") {
    try {
      this.inner = new HfLibraryTokenizer(tokenizerJson, config);
    } catch (error) {
      throw new Error(`${source}: unsupported or malformed tokenizer (${(error as Error).message})`);
    }
    const idOf = (token: SpecialToken): number | undefined => {
      const content = tokenContent(token);
      return content === undefined ? undefined : this.inner.token_to_id(content);
    };
    this.bosId = idOf(config.bos_token);
    this.eosId = idOf(config.eos_token);
    let largest = -1;
    for (const id of this.inner.get_vocab(true).values()) largest = Math.max(largest, id);
    this.vocabSize = largest + 1;
    // Off unless the config asks: the library's default (on) rewrites " ." as "." and so on, which changes text that
    // the model generated.
    this.cleanUpSpaces = config.clean_up_tokenization_spaces ?? false;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    // Special tokens are added here rather than by the post-processor, so that `bos`/`eos` mean the same for every
    // tokenizer (a post-processor may add both, or neither).
    const ids = this.inner.encode(text, { add_special_tokens: false }).ids;
    if (options.bos && this.bosId !== undefined) ids.unshift(this.bosId);
    if (options.eos && this.eosId !== undefined) ids.push(this.eosId);
    return ids;
  }

  decode(ids: readonly number[]): string {
    if (ids.length === 0) return "";
    return this.inner.decode([...ids], {
      skip_special_tokens: true,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }
}
