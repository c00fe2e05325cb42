/**
 * Incremental detokenization for streaming: push generated token ids, get text deltas that are always complete,
 * well-formed text. A character whose bytes are split across byte-fallback tokens is held back until it completes.
 *
 * Each delta is the difference between decoding a short window of recent ids with and without the new ones (the
 * approach of Hugging Face's text-generation-inference), so it works for any tokenizer's decoder, including the ones
 * that strip the leading space of a text's first token: the window always starts at tokens already emitted.
 */
import type { Tokenizer } from "./tokenizer.ts";

/** What a decoder returns for bytes that do not (yet) form a character. */
const REPLACEMENT = "\uFFFD";
/** Context ids kept before the first generated one: enough for decoders that look back one token or a few. */
const CONTEXT_IDS = 4;

export class TextStream {
  /** Ids from the start of the decoding window on. */
  private window: number[];
  /** Ids before this index in `window` were emitted in an earlier delta (or are context). */
  private readOffset: number;

  /**
   * `context` is what the generated ids continue (usually the prompt ids), so that the first delta keeps its
   * leading space; deltas then concatenate to decode(context + ids) minus decode(context). Without context they
   * concatenate to decode(ids).
   */
  constructor(
    private readonly tokenizer: Pick<Tokenizer, "decode">,
    context: readonly number[] = [],
  ) {
    this.window = context.slice(-CONTEXT_IDS);
    this.readOffset = this.window.length;
  }

  /** Appends ids and returns the text that became complete ("" when it must wait for more ids). */
  push(ids: number | readonly number[]): string {
    if (typeof ids === "number") this.window.push(ids);
    else this.window.push(...ids);
    const known = this.tokenizer.decode(this.window.slice(0, this.readOffset));
    const text = this.tokenizer.decode(this.window);
    if (text.length <= known.length || text.endsWith(REPLACEMENT)) return "";
    this.advance();
    return text.slice(known.length);
  }

  /** Returns whatever is held back (an incomplete character decodes to U+FFFD). Call once at the end. */
  flush(): string {
    const known = this.tokenizer.decode(this.window.slice(0, this.readOffset));
    const text = this.tokenizer.decode(this.window);
    this.advance();
    return text.slice(known.length);
  }

  /** The ids just emitted become the next window's context. */
  private advance(): void {
    this.window = this.window.slice(this.readOffset);
    this.readOffset = this.window.length;
  }
}
