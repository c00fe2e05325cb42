/**
 * Per-sequence KV caches kept as views into the present tensors of the forward that produced them: a batch's present
 * output is one block shared by all its sequences, each owning one row, and its cached positions are runs of columns
 * of that row (left padding and rolled-back positions are simply not in the runs). Nothing is copied when a sequence
 * is truncated or compacted (a tree's rejected branches leave the runs); copies happen only when a batch has to be
 * assembled from several blocks (see batch-plan.ts).
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

/** The column holding cached position `position` of `runs`. */
function columnOf(runs: readonly ColumnRun[], position: number): number {
  let offset = position;
  for (const run of runs) {
    if (offset < run.length) return run.start + offset;
    offset -= run.length;
  }
  throw new RangeError(`position ${position} is not cached`);
}

/** The columns of the first `start` positions of `runs`, then those of positions start + kept[j], as runs. */
function compactedRuns(runs: readonly ColumnRun[], start: number, kept: readonly number[]): ColumnRun[] {
  const compacted = firstColumns(runs, start);
  for (const slot of kept) {
    const column = columnOf(runs, start + slot);
    const last = compacted.at(-1);
    if (last !== undefined && last.start + last.length === column) {
      compacted[compacted.length - 1] = { start: last.start, length: last.length + 1 };
    } else {
      compacted.push({ start: column, length: 1 });
    }
  }
  return compacted;
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

  /** Keeps the first `start` positions, then those at start + kept[j] (see CausalLM.compact); throws on bad slots. */
  compact(sequenceId: string, start: number, kept: readonly number[]): void {
    const length = this.length(sequenceId);
    if (start > length) throw new RangeError(`cannot keep ${start} positions of ${sequenceId}, which holds ${length}`);
    kept.forEach((slot, j) => {
      if (!Number.isInteger(slot) || slot < (j === 0 ? 0 : kept[j - 1] + 1) || start + slot >= length) {
        throw new RangeError(
          `kept slots must ascend within the ${length - start} positions after ${start}, got [${kept.join(", ")}]`,
        );
      }
    });
    const kv = this.#sequences.get(sequenceId);
    if (kv === undefined) return;
    if (start + kept.length === 0) {
      this.release(sequenceId);
      return;
    }
    this.#sequences.set(sequenceId, { ...kv, runs: compactedRuns(kv.runs, start, kept), length: start + kept.length });
    this.#cachedTokens -= kv.length - (start + kept.length);
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
