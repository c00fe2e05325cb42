/**
 * The llama2.c `tokenizer.bin` format: uint32 max_token_length, then per token a float32 merge score, an int32 byte
 * length and the piece's bytes. Ids 0/1/2 are <unk>, BOS and EOS; pieces `<0x00>`..`<0xFF>` are byte-fallback tokens.
 * Encoding and decoding follow llama2.c's run.c (a dummy prefix space before non-empty text, the leading space of the
 * token after BOS stripped when decoding).
 */
import { type MergeVocabulary, mergeByScore } from "./score-bpe.ts";
import type { EncodeOptions, Tokenizer } from "./tokenizer.ts";

/** Name of a llama2.c tokenizer inside a model directory (where `loadTokenizer` looks for one). */
export const LLAMA2C_TOKENIZER_FILE = "tokenizer.bin";

const UNK_ID = 0;
const BOS_ID = 1;
const EOS_ID = 2;
const SPACE = 0x20;
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

export class Llama2cTokenizer implements Tokenizer {
  readonly bosId = BOS_ID;
  readonly eosId = EOS_ID;
  readonly vocabSize: number;
  /** Longest piece in bytes, as the file's header declares it. */
  readonly maxTokenLength: number;
  private readonly vocab: MergeVocabulary;
  /** Bytes each id decodes to (byte tokens to their raw byte, BOS/EOS to nothing). */
  private readonly pieceBytes: readonly Uint8Array[];
  /** Id of the byte-fallback token of each byte value. */
  private readonly byteIds: Int32Array;
  private readonly utf8 = new TextDecoder("utf-8");

  private constructor(maxTokenLength: number, pieces: string[], scores: Float32Array) {
    this.maxTokenLength = maxTokenLength;
    this.vocabSize = pieces.length;
    const idOf = new Map<string, number>();
    pieces.forEach((piece, id) => {
      if (!idOf.has(piece)) idOf.set(piece, id);
    });
    this.vocab = { pieces, scores, idOf };
    this.byteIds = new Int32Array(256).fill(UNK_ID);
    this.pieceBytes = pieces.map((piece, id) => {
      if (id === BOS_ID || id === EOS_ID) return new Uint8Array(0);
      const byte = BYTE_PIECE.exec(piece);
      if (byte) {
        const value = Number.parseInt(byte[1], 16);
        if (this.byteIds[value] === UNK_ID) this.byteIds[value] = id;
        return Uint8Array.of(value);
      }
      return Buffer.from(piece, "latin1");
    });
  }

  /** Parses the contents of a `tokenizer.bin`; `source` names the file in error messages. */
  static fromBytes(bytes: Uint8Array, source = "tokenizer.bin"): Llama2cTokenizer {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.byteLength < 4)
      throw new Error(`${source}: too short for a llama2.c tokenizer (${bytes.byteLength} bytes)`);
    const maxTokenLength = view.getUint32(0, true);
    const pieces: string[] = [];
    const scores: number[] = [];
    let offset = 4;
    while (offset < bytes.byteLength) {
      if (offset + 8 > bytes.byteLength) {
        throw new Error(`${source}: truncated at byte ${offset} (token ${pieces.length} has an incomplete header)`);
      }
      const score = view.getFloat32(offset, true);
      const length = view.getInt32(offset + 4, true);
      offset += 8;
      if (length < 0 || offset + length > bytes.byteLength) {
        throw new Error(`${source}: token ${pieces.length} declares ${length} bytes at byte ${offset}, past the end`);
      }
      pieces.push(Buffer.from(bytes.buffer, bytes.byteOffset + offset, length).toString("latin1"));
      scores.push(score);
      offset += length;
    }
    if (pieces.length <= EOS_ID) throw new Error(`${source}: only ${pieces.length} tokens, not a llama2.c tokenizer`);
    return new Llama2cTokenizer(maxTokenLength, pieces, Float32Array.from(scores));
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const symbols: number[] = [];
    if (text.length > 0) {
      const space = this.vocab.idOf.get(" ");
      symbols.push(space ?? this.byteIds[SPACE]);
    }
    // One symbol per UTF-8 character, or its byte tokens when the character is not in the vocabulary (as run.c).
    const bytes = Buffer.from(text, "utf8");
    let start = 0;
    while (start < bytes.length) {
      let end = start + 1;
      while (end < bytes.length && (bytes[end] & 0xc0) === 0x80 && end - start < 4) end++;
      const id = this.vocab.idOf.get(bytes.toString("latin1", start, end));
      if (id !== undefined) symbols.push(id);
      else for (let i = start; i < end; i++) symbols.push(this.byteIds[bytes[i]]);
      start = end;
    }
    const ids = mergeByScore(symbols, this.vocab);
    if (options.bos) ids.unshift(BOS_ID);
    if (options.eos) ids.push(EOS_ID);
    return ids;
  }

  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let previous = -1;
    for (const id of ids) {
      const bytes = this.pieceBytes[id];
      if (bytes === undefined)
        throw new RangeError(`token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
      const strip = previous === BOS_ID && this.vocab.pieces[id].startsWith(" ");
      parts.push(strip ? bytes.subarray(1) : bytes);
      previous = id;
    }
    return this.utf8.decode(Buffer.concat(parts));
  }
}
