/**
 * CausalLM over an ONNX decoder (Hugging Face Optimum / transformers.js layout) run by onnxruntime-node, with one KV
 * cache per sequence and any number of sequences appended to in one batched session run.
 */
import { InferenceSession, Tensor } from "onnxruntime-node";
import {
  assemblePast,
  type BatchItem,
  type BatchPlan,
  batchInputs,
  planBatch,
  planRuns,
  runsAfter,
} from "./batch-plan.ts";
import type { CausalLM, ForwardRequest, HeadOutputs, MedusaLM, ModelInfo, TreeAttention } from "./causal-lm.ts";
import { type DecoderLayout, decoderLayout } from "./decoder-layout.ts";
import { KvBlock, KvCacheStore } from "./kv-cache.ts";
import { type ModelFiles, resolveModel } from "./model-files.ts";
import {
  parseRuntimeOptions,
  type RuntimeOptions,
  type RuntimeOptionsInput,
  sessionOptions,
} from "./runtime-config.ts";
import { CacheCapacityError, ContextLengthError, UnsupportedModelError } from "./runtime-errors.ts";

/** Counters of the work the runtime did, for benchmarks and metrics. */
export interface RuntimeStats {
  readonly sequences: number;
  /** Bytes of KV the cached tokens occupy (what `cacheBytes()` reports and `maxCacheBytes` caps). */
  readonly cacheBytes: number;
  /** Bytes of the cache tensors kept alive, including batch padding and rolled-back positions not yet compacted. */
  readonly heldBytes: number;
  /** Session runs. */
  readonly runs: number;
  /** Runs that fed an earlier run's present tensors back unchanged. */
  readonly zeroCopyRuns: number;
  /** Bytes of the reusable buffers batched pasts are assembled in. */
  readonly scratchBytes: number;
  /** Bytes copied (and ms spent) assembling batched pasts from several caches. */
  readonly copiedBytes: number;
  readonly copyMs: number;
  readonly runMs: number;
}

/** A MedusaLM when the graph carries heads; a plain decoder's `medusa` is undefined (`isMedusaLM` false). */
export class OnnxCausalLM implements CausalLM {
  readonly info: ModelInfo;
  readonly medusa: MedusaLM["medusa"] | undefined;
  readonly #heads = new Map<string, HeadOutputs>();
  readonly #store: KvCacheStore;
  /** Forwards run one after another: each plans from, and commits to, the caches the previous one left. */
  #queue: Promise<unknown> = Promise.resolve();
  /** Forwards issued so far; a forward's issue number orders it against releases. */
  #issued = 0;
  /** Per sequence, the forwards issued and not yet settled. */
  readonly #pending = new Map<string, number>();
  /** Per sequence released while forwards were pending: those issued before this number must not store its cache. */
  readonly #releasedAt = new Map<string, number>();
  /**
   * Per cache input, the memory batched pasts are assembled in: a past only lives for its session run (the run's
   * present outputs are new buffers), so one buffer serves every run and spares a fresh allocation per step.
   */
  readonly #scratch: Float32Array[] = [];
  #stats = { runs: 0, zeroCopyRuns: 0, copiedBytes: 0, copyMs: 0, runMs: 0 };

  private constructor(
    readonly files: ModelFiles,
    readonly layout: DecoderLayout,
    readonly options: RuntimeOptions,
    readonly session: InferenceSession,
  ) {
    this.info = {
      name: files.name,
      vocabSize: layout.vocabSize,
      contextLength: layout.contextLength,
      bosTokenId: layout.bosTokenId,
      eosTokenId: layout.eosTokenId,
      kvBytesPerToken: layout.kvBytesPerToken,
    };
    this.medusa = layout.medusaHeads > 0 ? { heads: layout.medusaHeads, hiddenSize: layout.hiddenSize } : undefined;
    this.#store = new KvCacheStore(layout.kvBytesPerToken);
  }

  /** Loads a model directory (a path, or a name under models/) and creates its ONNX Runtime session. */
  static async load(model: string, options: RuntimeOptionsInput = {}): Promise<OnnxCausalLM> {
    const runtimeOptions = parseRuntimeOptions(options);
    const files = resolveModel(model);
    const session = await InferenceSession.create(files.onnxPath, sessionOptions(runtimeOptions));
    try {
      const layout = decoderLayout(session.inputMetadata, session.outputMetadata, files.config);
      return new OnnxCausalLM(files, layout, runtimeOptions, session);
    } catch (error) {
      await session.release();
      throw error;
    }
  }

  forward(batch: readonly ForwardRequest[]): Promise<Float32Array[]> {
    const issue = this.#issued++;
    const ids = batch.map((request) => request.sequenceId);
    for (const id of ids) this.#pending.set(id, (this.#pending.get(id) ?? 0) + 1);
    const result = this.#queue
      .then(() => this.#forward(batch, issue))
      .finally(() => {
        for (const id of ids) {
          const left = (this.#pending.get(id) ?? 1) - 1;
          if (left > 0) this.#pending.set(id, left);
          else {
            this.#pending.delete(id);
            this.#releasedAt.delete(id);
          }
        }
      });
    this.#queue = result.catch(() => undefined);
    return result;
  }

  sequenceLength(sequenceId: string): number {
    return this.#store.length(sequenceId);
  }

  truncate(sequenceId: string, length: number): void {
    if (!Number.isInteger(length) || length < 0) {
      throw new RangeError(`truncate length must be a non-negative integer, got ${length}`);
    }
    if (this.#pending.has(sequenceId)) {
      throw new Error(`sequence ${sequenceId} has a forward pending; truncate it after the forward resolves`);
    }
    this.#store.truncate(sequenceId, length);
  }

  compact(sequenceId: string, start: number, kept: readonly number[]): void {
    if (!Number.isInteger(start) || start < 0) {
      throw new RangeError(`compaction start must be a non-negative integer, got ${start}`);
    }
    if (this.#pending.has(sequenceId)) {
      throw new Error(`sequence ${sequenceId} has a forward pending; compact it after the forward resolves`);
    }
    this.#store.compact(sequenceId, start, kept);
  }

  lastHeadOutputs(sequenceId: string): HeadOutputs | undefined {
    return this.#heads.get(sequenceId);
  }

  release(sequenceId: string): void {
    this.#heads.delete(sequenceId);
    if (this.#pending.has(sequenceId)) this.#releasedAt.set(sequenceId, this.#issued);
    this.#store.release(sequenceId);
  }

  cacheBytes(sequenceId?: string): number {
    return this.#store.bytes(sequenceId);
  }

  stats(): RuntimeStats {
    return {
      sequences: this.#store.sequenceCount,
      cacheBytes: this.#store.bytes(),
      heldBytes: this.#store.heldBytes(),
      scratchBytes: this.#scratch.reduce((sum, buffer) => sum + buffer.byteLength, 0),
      ...this.#stats,
    };
  }

  async close(): Promise<void> {
    await this.#queue;
    this.#store.clear();
    this.#heads.clear();
    this.#scratch.length = 0;
    await this.session.release();
  }

  async #forward(batch: readonly ForwardRequest[], issue: number): Promise<Float32Array[]> {
    this.#validate(batch);
    const results: Float32Array[] = batch.map(() => new Float32Array(0));
    const work = batch.flatMap((request, index) => (request.tokens.length > 0 ? [{ request, index }] : []));
    if (work.length === 0) return results;
    // Without position_ids the graph cannot be told where a padded row's tokens sit, so each sequence runs alone;
    // with them, rows of very different lengths (a prefill among decode rows) run apart rather than padded alike.
    const groups = this.layout.hasPositionIds
      ? planRuns(work.map((entry) => entry.request.tokens.length)).map((run) => run.map((i) => work[i]))
      : work.map((entry) => [entry]);
    for (const group of groups) {
      const logits = await this.#run(
        group.map((entry) => entry.request),
        issue,
      );
      group.forEach((entry, i) => {
        results[entry.index] = logits[i];
      });
    }
    return results;
  }

  #validate(batch: readonly ForwardRequest[]): void {
    const seen = new Set<string>();
    let bytesAfter = this.#store.bytes();
    for (const { sequenceId, tokens, tree } of batch) {
      if (typeof sequenceId !== "string" || sequenceId.length === 0) {
        throw new TypeError("every forward request needs a non-empty sequenceId");
      }
      if (seen.has(sequenceId)) throw new TypeError(`sequence ${sequenceId} appears twice in one forward`);
      seen.add(sequenceId);
      for (const token of tokens) {
        if (!Number.isInteger(token) || token < 0 || token >= this.layout.vocabSize) {
          throw new RangeError(`token id ${token} of sequence ${sequenceId} is outside [0, ${this.layout.vocabSize})`);
        }
      }
      const length = this.#store.length(sequenceId) + tokens.length;
      if (length > this.layout.contextLength) {
        throw new ContextLengthError(sequenceId, length, this.layout.contextLength);
      }
      if (tree !== undefined) this.#validateTree(sequenceId, tokens.length, tree);
      bytesAfter += tokens.length * this.layout.kvBytesPerToken;
    }
    if (bytesAfter > this.options.maxCacheBytes) {
      throw new CacheCapacityError(bytesAfter, this.options.maxCacheBytes);
    }
  }

  #validateTree(sequenceId: string, size: number, tree: TreeAttention): void {
    if (!this.layout.hasTreeMask) {
      throw new UnsupportedModelError(
        `model ${this.info.name} scores chains only: its graph reads no tree mask after attention_mask (a specgate ` +
          "graph does) or takes no position_ids, so a token tree cannot be scored in one forward",
      );
    }
    if (tree.mask.length !== size * size || tree.depths.length !== size) {
      throw new RangeError(
        `the tree of sequence ${sequenceId} has ${tree.mask.length} mask entries and ${tree.depths.length} depths ` +
          `for ${size} tokens (want ${size * size} and ${size})`,
      );
    }
    const pastLength = this.#store.length(sequenceId);
    for (let i = 0; i < size; i++) {
      const depth = tree.depths[i];
      if (!Number.isInteger(depth) || depth < 0 || pastLength + depth >= this.layout.contextLength) {
        throw new RangeError(`token ${i} of the tree of sequence ${sequenceId} has depth ${depth}`);
      }
      for (let j = 0; j < size; j++) {
        const entry = tree.mask[i * size + j];
        const valid = j === i ? entry === 1 : entry === 0 || (entry === 1 && j < i);
        if (!valid) {
          throw new RangeError(
            `the tree mask of sequence ${sequenceId} lets token ${i} see token ${j} as ${entry}: a token sees itself ` +
              "(1) and may see earlier tokens only (0 or 1)",
          );
        }
      }
    }
  }

  #scratchBuffer(input: number, length: number): Float32Array {
    const current = this.#scratch[input];
    if (current === undefined || current.length < length) {
      this.#scratch[input] = new Float32Array(Math.ceil(length * 1.25));
    }
    return this.#scratch[input].subarray(0, length);
  }

  /** One session run over the requests; commits their caches only once it succeeded. */
  async #run(requests: readonly ForwardRequest[], issue: number): Promise<Float32Array[]> {
    const { layout } = this;
    const items: BatchItem[] = requests.map((request) => ({
      sequence: this.#store.get(request.sequenceId),
      tokens: request.tokens,
      tree: request.tree,
    }));
    const plan = planBatch(items, { contextLength: layout.contextLength, allowGaps: layout.hasPositionIds });
    const feeds = this.#feeds(plan, items);
    const started = performance.now();
    const outputs = await this.session.run(feeds);
    this.#stats.runMs += performance.now() - started;
    this.#stats.runs++;
    if (plan.reused !== undefined) this.#stats.zeroCopyRuns++;

    const rows = plan.rows.length;
    const width = plan.pastWidth + plan.newWidth;
    const presents = layout.presentNames.map((name) => outputs[name] as Tensor);
    const block = new KvBlock(presents, rows, width, rows * width * layout.kvBytesPerToken);
    const logits = (outputs.logits as Tensor).data as Float32Array;
    const heads = layout.medusaHeads > 0 && {
      logits: (outputs.medusa_logits as Tensor).data as Float32Array,
      hidden: (outputs.hidden_states as Tensor).data as Float32Array,
      width: layout.medusaHeads * layout.vocabSize,
    };
    const results = new Array<Float32Array>(requests.length);
    plan.rows.forEach((row, r) => {
      const { sequenceId } = requests[row.item];
      const first = r * plan.newWidth * layout.vocabSize;
      results[row.item] = logits.subarray(first, first + row.tokens.length * layout.vocabSize);
      if ((this.#releasedAt.get(sequenceId) ?? -1) > issue) return;
      if (heads) {
        const at = r * plan.newWidth;
        this.#heads.set(sequenceId, {
          medusaLogits: heads.logits.subarray(at * heads.width, (at + row.tokens.length) * heads.width),
          hiddenStates: heads.hidden.subarray(at * layout.hiddenSize, (at + row.tokens.length) * layout.hiddenSize),
        });
      }
      this.#store.set(sequenceId, {
        block,
        row: r,
        runs: runsAfter(plan, row),
        length: row.pastLength + row.tokens.length,
      });
    });
    return results;
  }

  #feeds(plan: BatchPlan, items: readonly BatchItem[]): Record<string, Tensor> {
    const { layout } = this;
    const rows = plan.rows.length;
    const inputs = batchInputs(plan, layout.contextLength);
    const feeds: Record<string, Tensor> = {
      input_ids: new Tensor("int64", inputs.inputIds, [rows, plan.newWidth]),
      attention_mask: new Tensor("int64", inputs.attentionMask, [rows, inputs.maskWidth]),
    };
    if (layout.hasPositionIds) feeds.position_ids = new Tensor("int64", inputs.positionIds, [rows, plan.newWidth]);
    if (layout.hasUseCacheBranch) feeds.use_cache_branch = new Tensor("bool", [plan.pastWidth > 0], [1]);
    const dims = [rows, layout.numKvHeads, plan.pastWidth, layout.headDim];
    if (plan.reused !== undefined) {
      plan.reused.tensors.forEach((tensor, i) => {
        feeds[layout.pastNames[i]] = tensor;
      });
      return feeds;
    }
    const started = performance.now();
    const pasts = assemblePast(
      plan,
      items,
      layout.pastNames.length,
      layout.numKvHeads,
      layout.headDim,
      (input, length) => this.#scratchBuffer(input, length),
    );
    this.#stats.copyMs += performance.now() - started;
    this.#stats.copiedBytes += plan.rows.reduce((sum, row) => sum + row.pastLength, 0) * layout.kvBytesPerToken;
    pasts.forEach((past, i) => {
      feeds[layout.pastNames[i]] = new Tensor("float32", past, dims);
    });
    return feeds;
  }
}
