/**
 * How one forward lays several sequences out in a single batch: which row each takes, where its cached positions sit
 * in the batch's past (left padding for the shorter ones), how its new tokens are right-padded to the longest, and the
 * attention mask and position ids that make every row compute exactly what it would compute alone. A row whose tokens
 * form a tree gets its positions from the tree's depths and, when any row is a tree, every row carries a new×new block
 * at the end of its attention mask (all ones, causal, for chain rows and padding; see llama-graph.ts).
 *
 * When the batch is exactly the sequences of one earlier batch, that batch's present tensors are fed back as the past
 * unchanged (zero copy): rolled-back positions and padding stay in place as masked-out columns. Once those extra
 * columns outgrow `compactionSlack`, the past is assembled afresh by copying each sequence's positions, compacted.
 */
import type { TreeAttention } from "./causal-lm.ts";
import { type ColumnRun, firstColumns, type KvBlock, type SequenceKv } from "./kv-cache.ts";

export interface BatchItem {
  /** The sequence's cache, undefined for a sequence seen for the first time. */
  readonly sequence: SequenceKv | undefined;
  readonly tokens: readonly number[];
  readonly tree?: TreeAttention;
}

export interface PlannedRow {
  /** Index of the item in the forward's batch. */
  readonly item: number;
  readonly tokens: readonly number[];
  readonly tree?: TreeAttention;
  readonly pastLength: number;
  /** Columns of the batch's past holding the sequence's cached positions, in order. */
  readonly pastRuns: readonly ColumnRun[];
}

export interface BatchPlan {
  /** One per batch row, in row order. */
  readonly rows: readonly PlannedRow[];
  readonly pastWidth: number;
  /** Tokens per row after right padding (the most any item appends). */
  readonly newWidth: number;
  /** The block whose tensors are fed as the past unchanged, or undefined when `assemblePast` copies one together. */
  readonly reused: KvBlock | undefined;
}

export interface PlanConstraints {
  readonly contextLength: number;
  /**
   * Whether rows may carry masked-out columns (padding, rolled-back positions). Graphs without a position_ids input
   * derive positions from the column index, so for them every row must be exactly its positions from column 0.
   */
  readonly allowGaps: boolean;
}

/**
 * What one more session run costs, in scored positions: its fixed work (reading every weight, launching kernels) next
 * to one position's. On this project's CPUs one more position adds 8–10% to a decode step, so a run is worth 10–12
 * positions; 16 leans towards fewer runs, as on a GPU, where positions cost less still.
 */
export const RUN_COST_POSITIONS = 16;

/**
 * Which requests share a session run (indices into `lengths`, the new tokens of each): a batch pads every row to its
 * longest, so a prompt's prefill in a batch of decode rows would make each of them score hundreds of padding
 * positions. The cheapest split of the requests sorted by length, where a run costs RUN_COST_POSITIONS plus its rows ×
 * its widest row (dynamic programming over the sorted lengths: optimal, and n ≤ a batch).
 */
export function planRuns(lengths: readonly number[]): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[a] - lengths[b] || a - b);
  const n = order.length;
  // best[j]: the cheapest cost of the first j sorted requests; cut[j]: where its last run starts.
  const best = new Array<number>(n + 1).fill(Number.POSITIVE_INFINITY);
  const cut = new Array<number>(n + 1).fill(0);
  best[0] = 0;
  for (let j = 1; j <= n; j++) {
    const width = lengths[order[j - 1]];
    for (let i = 0; i < j; i++) {
      const cost = best[i] + RUN_COST_POSITIONS + (j - i) * width;
      if (cost < best[j]) {
        best[j] = cost;
        cut[j] = i;
      }
    }
  }
  const runs: number[][] = [];
  for (let j = n; j > 0; j = cut[j]) runs.unshift(order.slice(cut[j], j).sort((a, b) => a - b));
  return runs;
}

/** Columns beyond the widest row's needs that a reused block may carry before the past is compacted by a copy. */
export function compactionSlack(neededWidth: number): number {
  return Math.max(32, Math.ceil(neededWidth / 4));
}

export function planBatch(items: readonly BatchItem[], constraints: PlanConstraints): BatchPlan {
  const newWidth = Math.max(...items.map((item) => item.tokens.length));
  return reusePlan(items, newWidth, constraints) ?? copyPlan(items, newWidth);
}

function reusePlan(items: readonly BatchItem[], newWidth: number, constraints: PlanConstraints): BatchPlan | undefined {
  const block = items[0].sequence?.block;
  if (block === undefined || block.rows !== items.length) return undefined;
  let neededWidth = 0;
  for (const { sequence, tokens } of items) {
    if (sequence?.block !== block) return undefined;
    const gapless = sequence.length === block.width && sequence.runs[0].start === 0;
    if (!constraints.allowGaps && !gapless) return undefined;
    neededWidth = Math.max(neededWidth, sequence.length + tokens.length);
  }
  const width = block.width + newWidth;
  if (width > constraints.contextLength || width - neededWidth > compactionSlack(neededWidth)) return undefined;
  const rows = new Array<PlannedRow>(items.length);
  items.forEach(({ sequence, tokens, tree }, item) => {
    const kv = sequence as SequenceKv;
    rows[kv.row] = { item, tokens, tree, pastLength: kv.length, pastRuns: firstColumns(kv.runs, kv.length) };
  });
  return { rows, pastWidth: block.width, newWidth, reused: block };
}

function copyPlan(items: readonly BatchItem[], newWidth: number): BatchPlan {
  const pastWidth = Math.max(...items.map((item) => item.sequence?.length ?? 0));
  const rows = items.map(({ sequence, tokens, tree }, item): PlannedRow => {
    const pastLength = sequence?.length ?? 0;
    const pastRuns = pastLength > 0 ? [{ start: pastWidth - pastLength, length: pastLength }] : [];
    return { item, tokens, tree, pastLength, pastRuns };
  });
  return { rows, pastWidth, newWidth, reused: undefined };
}

export interface BatchInputs {
  /** [rows, newWidth] */
  readonly inputIds: BigInt64Array;
  /** [rows, maskWidth] */
  readonly attentionMask: BigInt64Array;
  /** pastWidth + newWidth, plus newWidth² when a row is a tree. */
  readonly maskWidth: number;
  /** [rows, newWidth] */
  readonly positionIds: BigInt64Array;
}

/** Token ids, mask and positions for the plan; padded slots get token 0, mask 0 and a harmless in-range position. */
export function batchInputs(plan: BatchPlan, contextLength: number): BatchInputs {
  const { rows, pastWidth, newWidth } = plan;
  const width = pastWidth + newWidth;
  const maskWidth = rows.some((row) => row.tree !== undefined) ? width + newWidth * newWidth : width;
  const inputIds = new BigInt64Array(rows.length * newWidth);
  const attentionMask = new BigInt64Array(rows.length * maskWidth);
  const positionIds = new BigInt64Array(rows.length * newWidth);
  rows.forEach((row, r) => {
    const mask = r * maskWidth;
    for (const run of row.pastRuns) attentionMask.fill(1n, mask + run.start, mask + run.start + run.length);
    attentionMask.fill(1n, mask + pastWidth, mask + pastWidth + row.tokens.length);
    for (let j = 0; j < newWidth; j++) {
      inputIds[r * newWidth + j] = BigInt(row.tokens[j] ?? 0);
      const offset = j < row.tokens.length && row.tree !== undefined ? row.tree.depths[j] : j;
      positionIds[r * newWidth + j] = BigInt(Math.min(row.pastLength + offset, contextLength - 1));
    }
    if (maskWidth > width) writeTreeBlock(attentionMask.subarray(mask + width, mask + maskWidth), row, newWidth);
  });
  return { inputIds, attentionMask, maskWidth, positionIds };
}

/** The row's tree mask in the top left of a newWidth × newWidth block of ones (chain rows and padding stay causal). */
function writeTreeBlock(block: BigInt64Array, row: PlannedRow, newWidth: number): void {
  block.fill(1n);
  const { tree } = row;
  if (tree === undefined) return;
  const n = row.tokens.length;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) block[i * newWidth + j] = BigInt(tree.mask[i * n + j]);
  }
}

/**
 * Copies each row's cached positions into past tensors [rows, kvHeads, pastWidth, headDim], left-padded, one per cache
 * input, in buffers obtained from `buffer(input, length)`. Padding columns are left as they are: they are masked out,
 * so any finite values do (earlier KV values, or zeros).
 */
export function assemblePast(
  plan: BatchPlan,
  items: readonly BatchItem[],
  cacheInputs: number,
  kvHeads: number,
  headDim: number,
  buffer: (input: number, length: number) => Float32Array,
): Float32Array[] {
  const { rows, pastWidth } = plan;
  const pasts: Float32Array[] = [];
  for (let input = 0; input < cacheInputs; input++) {
    const past = buffer(input, rows.length * kvHeads * pastWidth * headDim);
    rows.forEach((row, r) => {
      const source = items[row.item].sequence;
      if (source === undefined || row.pastLength === 0) return;
      const data = source.block.tensors[input].data as Float32Array;
      const runs = firstColumns(source.runs, row.pastLength);
      for (let head = 0; head < kvHeads; head++) {
        const from = (source.row * kvHeads + head) * source.block.width;
        let to = (r * kvHeads + head) * pastWidth + row.pastRuns[0].start;
        for (const run of runs) {
          past.set(
            data.subarray((from + run.start) * headDim, (from + run.start + run.length) * headDim),
            to * headDim,
          );
          to += run.length;
        }
      }
    });
    pasts.push(past);
  }
  return pasts;
}

/** The runs holding a row's positions after the forward: its past runs, then its new tokens. */
export function runsAfter(plan: BatchPlan, row: PlannedRow): ColumnRun[] {
  const appended = { start: plan.pastWidth, length: row.tokens.length };
  const last = row.pastRuns.at(-1);
  if (last !== undefined && last.start + last.length === appended.start) {
    return [...row.pastRuns.slice(0, -1), { start: last.start, length: last.length + appended.length }];
  }
  return [...row.pastRuns, appended];
}
