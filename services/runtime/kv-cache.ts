/**
 * Per-sequence KV caches kept as views into the present tensors of the forward that produced them: a batch's present
 * output is one block shared by all its sequences, each owning one row, and its cached positions are runs of columns
 * of that row (left padding and rolled-back positions are simply not in the runs). Nothing is copied when a sequence
 * is truncated; copies happen only when a batch has to be assembled from several blocks (see batch-plan.ts).
 */
import type { Tensor } from "onnxruntime-node";

/** The present tensors of one forward run, [rows, kvHeads, width, headDim] each, in the layout's `pastNames` order. */
export class KvBlock {
  /** Sequences whose cache lives in this block; at zero nothing refers to it and it is garbage. */
  owners = 0;
  constructor(
    readonly tensors: readonly Tensor[],
    readonly rows: number,
    readonly width: number,
    readonly bytes: number,
  ) {}
}

/** A run of columns of a block row holding consecutive cached positions. */
export interface ColumnRun {
  readonly start: number;
  readonly length: number;
}

export interface SequenceKv {
  readonly block: KvBlock;
  readonly row: number;
  /** Runs in position order; together they hold at least `length` positions (extra ones were truncated lazily). */
  readonly runs: readonly ColumnRun[];
  readonly length: number;
}

/** The columns holding the first `length` positions of `runs`. */
export function firstColumns(runs: readonly ColumnRun[], length: number): ColumnRun[] {
  const kept: ColumnRun[] = [];
  let remaining = length;
  for (const run of runs) {
    if (remaining === 0) break;
    const take = Math.min(run.length, remaining);
    kept.push({ start: run.start, length: take });
    remaining -= take;
  }
  return kept;
}

/** The sequences' caches and what they hold: tokens and bytes per sequence, and the bytes of the blocks behind them. */
export class KvCacheStore {
  readonly #sequences = new Map<string, SequenceKv>();
  #cachedTokens = 0;
  #blockBytes = 0;

  constructor(readonly kvBytesPerToken: number) {}

  get(sequenceId: string): SequenceKv | undefined {
    return this.#sequences.get(sequenceId);
  }

  length(sequenceId: string): number {
    return this.#sequences.get(sequenceId)?.length ?? 0;
  }

  /** Bytes of KV the sequence's cached tokens occupy, or all sequences' when no id is given. */
  bytes(sequenceId?: string): number {
    const tokens = sequenceId === undefined ? this.#cachedTokens : this.length(sequenceId);
    return tokens * this.kvBytesPerToken;
  }

  /**
   * Bytes of the tensors the caches keep alive: at least `bytes()`, more by the padding of batches and by positions
   * truncated but not yet compacted away.
   */
  heldBytes(): number {
    return this.#blockBytes;
  }

  get sequenceCount(): number {
    return this.#sequences.size;
  }

  set(sequenceId: string, kv: SequenceKv): void {
    this.#drop(sequenceId);
    if (kv.block.owners++ === 0) this.#blockBytes += kv.block.bytes;
    this.#sequences.set(sequenceId, kv);
    this.#cachedTokens += kv.length;
  }

  truncate(sequenceId: string, length: number): void {
    const kv = this.#sequences.get(sequenceId);
    if (kv === undefined || length >= kv.length) return;
    if (length === 0) {
      this.release(sequenceId);
      return;
    }
    this.#sequences.set(sequenceId, { ...kv, length });
    this.#cachedTokens -= kv.length - length;
  }

  release(sequenceId: string): void {
    this.#drop(sequenceId);
  }

  clear(): void {
    for (const sequenceId of [...this.#sequences.keys()]) this.#drop(sequenceId);
  }

  #drop(sequenceId: string): void {
    const kv = this.#sequences.get(sequenceId);
    if (kv === undefined) return;
    this.#sequences.delete(sequenceId);
    this.#cachedTokens -= kv.length;
    if (--kv.block.owners === 0) this.#blockBytes -= kv.block.bytes;
  }
}
