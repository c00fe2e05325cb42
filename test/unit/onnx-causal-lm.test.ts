import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { pathTo, pathTokens, ROOT, slotOf, type TokenTree, tokenTree } from "../../services/engine/token-tree.ts";
import { compactionPlan, treeMask, treePositions } from "../../services/engine/tree-attention.ts";
import { buildLlamaGraph, OPSET } from "../../services/model-builder/llama-graph.ts";
import { toHfConfig } from "../../services/model-builder/model-config.ts";
import { serializeModel } from "../../services/model-builder/onnx-graph.ts";
import { buildRandomLlama, randomLlamaWeights } from "../../services/model-builder/random-llama.ts";
import type { ForwardRequest } from "../../services/runtime/causal-lm.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import {
  CacheCapacityError,
  ContextLengthError,
  UnsupportedModelError,
} from "../../services/runtime/runtime-errors.ts";

const TOLERANCE = 1e-4;
const VOCAB = 64;
const CONTEXT = 256;

let dir: string;
let lm: OnnxCausalLM;

/** Deterministic token ids that differ per seed. */
function tokens(count: number, seed: number): number[] {
  return Array.from({ length: count }, (_, i) => (seed * 31 + i * 17 + ((i * i) % 7)) % VOCAB);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, "logits of different lengths");
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

function assertClose(actual: Float32Array, expected: Float32Array, what: string): void {
  const diff = maxAbsDiff(actual, expected);
  assert.ok(diff <= TOLERANCE, `${what}: max abs diff ${diff}`);
}

let referenceCount = 0;

/** Logits of `appended` after `history`, computed by a sequence alone in its own forwards (no batching, no padding). */
async function alone(
  history: readonly number[],
  appended: readonly number[],
  model: OnnxCausalLM = lm,
): Promise<Float32Array> {
  const sequenceId = `reference-${referenceCount++}`;
  if (history.length > 0) await model.forward([{ sequenceId, tokens: history }]);
  const [logits] = await model.forward([{ sequenceId, tokens: appended }]);
  model.release(sequenceId);
  return logits.slice();
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "specgate-causal-lm-"));
  await buildRandomLlama(join(dir, "tiny"), {
    vocab: VOCAB,
    dim: 32,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    maxSeqLen: CONTEXT,
  });
  lm = await OnnxCausalLM.load(join(dir, "tiny"));
});

after(async () => {
  await lm.close();
  await rm(dir, { recursive: true, force: true });
});

describe("OnnxCausalLM", () => {
  test("reads the model's dimensions from config.json and the graph", () => {
    assert.equal(lm.info.name, "tiny");
    assert.equal(lm.info.vocabSize, VOCAB);
    assert.equal(lm.info.contextLength, CONTEXT);
    assert.equal(lm.info.bosTokenId, 1);
    assert.equal(lm.info.eosTokenId, 2);
    // 2 layers × (key + value) × 2 kv heads × head_dim 8 × 4 bytes
    assert.equal(lm.info.kvBytesPerToken, 2 * 2 * 2 * 8 * 4);
  });

  test("every thread-spinning mode runs the model to the same logits on two intra-op threads", async () => {
    const history = tokens(40, 3);
    const expected = await alone(history, [5, 6, 7]);
    for (const threadSpinning of ["run", "always", "off"] as const) {
      const threaded = await OnnxCausalLM.load(join(dir, "tiny"), { intraOpThreads: 2, threadSpinning });
      try {
        await threaded.forward([{ sequenceId: "s", tokens: history }]);
        const [logits] = await threaded.forward([{ sequenceId: "s", tokens: [5, 6, 7] }]);
        assertClose(logits, expected, `threadSpinning ${threadSpinning}`);
      } finally {
        await threaded.close();
      }
    }
  });

  test("batched forward over sequences of very different lengths equals unbatched forwards", async () => {
    const histories = { long: tokens(150, 1), short: tokens(3, 2), mid: tokens(40, 3) };
    await lm.forward(Object.entries(histories).map(([sequenceId, history]) => ({ sequenceId, tokens: history })));
    // Different numbers of new tokens per sequence, and a sequence seen for the first time.
    const step: ForwardRequest[] = [
      { sequenceId: "short", tokens: tokens(5, 4) },
      { sequenceId: "fresh", tokens: tokens(7, 5) },
      { sequenceId: "long", tokens: tokens(1, 6) },
      { sequenceId: "mid", tokens: tokens(3, 7) },
    ];
    const batched = await lm.forward(step);
    const expected = [
      await alone(histories.short, step[0].tokens),
      await alone([], step[1].tokens),
      await alone(histories.long, step[2].tokens),
      await alone(histories.mid, step[3].tokens),
    ];
    step.forEach((request, i) => {
      assert.equal(batched[i].length, request.tokens.length * VOCAB);
      assertClose(batched[i], expected[i], request.sequenceId);
    });
    assert.equal(lm.sequenceLength("long"), 151);
    assert.equal(lm.sequenceLength("fresh"), 7);

    // The same four sequences again: the previous present tensors are fed back as the past, padding and all.
    const zeroCopyBefore = lm.stats().zeroCopyRuns;
    const next: ForwardRequest[] = step.map((request, i) => ({
      sequenceId: request.sequenceId,
      tokens: tokens(i + 1, 8),
    }));
    const again = await lm.forward(next);
    assert.equal(lm.stats().zeroCopyRuns, zeroCopyBefore + 1);
    const afterStep = {
      short: [...histories.short, ...step[0].tokens],
      fresh: step[1].tokens,
      long: [...histories.long, ...step[2].tokens],
      mid: [...histories.mid, ...step[3].tokens],
    };
    for (const [i, request] of next.entries()) {
      const history = afterStep[request.sequenceId as keyof typeof afterStep];
      assertClose(again[i], await alone(history, request.tokens), `${request.sequenceId} (fed back)`);
    }
    for (const id of ["short", "fresh", "long", "mid"]) lm.release(id);
  });

  test("truncating then re-appending gives the logits of a fresh prefill, alone and inside a batch", async () => {
    const text = tokens(30, 9);
    const [fresh] = await lm.forward([{ sequenceId: "fresh-prefill", tokens: text }]);
    const freshLogits = fresh.slice();
    lm.release("fresh-prefill");

    await lm.forward([{ sequenceId: "rolled", tokens: text.slice(0, 20) }]);
    await lm.forward([{ sequenceId: "rolled", tokens: tokens(6, 10) }]); // rejected draft tokens
    lm.truncate("rolled", 12);
    assert.equal(lm.sequenceLength("rolled"), 12);
    const [reappended] = await lm.forward([{ sequenceId: "rolled", tokens: text.slice(12) }]);
    assertClose(reappended, freshLogits.subarray(12 * VOCAB), "re-appended alone");

    // Two sequences batched together, one of them rolled back between two zero-copy steps.
    await lm.forward([
      { sequenceId: "batched", tokens: text.slice(0, 10) },
      { sequenceId: "other", tokens: tokens(4, 11) },
    ]);
    await lm.forward([
      { sequenceId: "batched", tokens: tokens(5, 12) },
      { sequenceId: "other", tokens: tokens(2, 13) },
    ]);
    lm.truncate("batched", 10);
    const [batchedLogits] = await lm.forward([
      { sequenceId: "batched", tokens: text.slice(10) },
      { sequenceId: "other", tokens: tokens(1, 14) },
    ]);
    assertClose(batchedLogits, freshLogits.subarray(10 * VOCAB), "re-appended in a batch");
    for (const id of ["rolled", "batched", "other"]) lm.release(id);
  });

  test("many rollbacks stay exact while held memory stays bounded", async () => {
    const text = tokens(120, 15);
    const [fresh] = await lm.forward([{ sequenceId: "reference", tokens: text }]);
    const freshLogits = fresh.slice();
    lm.release("reference");
    await lm.forward([{ sequenceId: "speculating", tokens: text.slice(0, 8) }]);
    let length = 8;
    while (length < text.length) {
      const accepted = Math.min(3, text.length - length);
      // Each round appends the accepted tokens plus rejected ones, then rolls the rejected ones back.
      await lm.forward([{ sequenceId: "speculating", tokens: [...text.slice(length, length + accepted), 0, 0, 0] }]);
      lm.truncate("speculating", length + accepted);
      length += accepted;
      const stats = lm.stats();
      assert.ok(stats.heldBytes <= 2 * stats.cacheBytes + 64 * lm.info.kvBytesPerToken, "held bytes stay bounded");
    }
    lm.truncate("speculating", 100);
    const [logits] = await lm.forward([{ sequenceId: "speculating", tokens: text.slice(100) }]);
    assertClose(logits, freshLogits.subarray(100 * VOCAB), "after 37 rollbacks");
    lm.release("speculating");
  });

  test("accounts KV bytes per sequence and in total, back to zero after release", async () => {
    const perToken = lm.info.kvBytesPerToken;
    await lm.forward([
      { sequenceId: "a", tokens: tokens(10, 16) },
      { sequenceId: "b", tokens: tokens(25, 17) },
    ]);
    assert.equal(lm.cacheBytes("a"), 10 * perToken);
    assert.equal(lm.cacheBytes("b"), 25 * perToken);
    assert.equal(lm.cacheBytes(), 35 * perToken);
    assert.ok(lm.stats().heldBytes >= lm.cacheBytes());
    lm.truncate("b", 5);
    assert.equal(lm.cacheBytes(), 15 * perToken);
    assert.equal(lm.cacheBytes("unknown"), 0);
    lm.release("a");
    lm.release("b");
    lm.release("b");
    assert.equal(lm.cacheBytes(), 0);
    assert.equal(lm.stats().heldBytes, 0);
    assert.equal(lm.stats().sequences, 0);
    assert.equal(lm.sequenceLength("a"), 0);
  });

  test("a forward that would exceed maxCacheBytes fails and leaves every cache intact", async () => {
    const capped = await OnnxCausalLM.load(join(dir, "tiny"), { maxCacheBytes: 30 * lm.info.kvBytesPerToken });
    try {
      const history = tokens(20, 18);
      await capped.forward([{ sequenceId: "kept", tokens: history }]);
      await assert.rejects(
        capped.forward([
          { sequenceId: "kept", tokens: tokens(4, 19) },
          { sequenceId: "newcomer", tokens: tokens(7, 20) },
        ]),
        (error: unknown) =>
          error instanceof CacheCapacityError && error.requestedBytes === 31 * lm.info.kvBytesPerToken,
      );
      assert.equal(capped.sequenceLength("kept"), 20);
      assert.equal(capped.sequenceLength("newcomer"), 0);
      assert.equal(capped.cacheBytes(), 20 * lm.info.kvBytesPerToken);
      const [logits] = await capped.forward([{ sequenceId: "kept", tokens: tokens(10, 21) }]);
      assertClose(logits, await alone(history, tokens(10, 21)), "after the refused forward");
      assert.equal(capped.cacheBytes(), 30 * lm.info.kvBytesPerToken);
    } finally {
      await capped.close();
    }
  });

  test("refuses bad requests without touching the caches", async () => {
    await lm.forward([{ sequenceId: "valid", tokens: tokens(5, 22) }]);
    await assert.rejects(lm.forward([{ sequenceId: "valid", tokens: [VOCAB] }]), RangeError);
    await assert.rejects(lm.forward([{ sequenceId: "valid", tokens: [1.5] }]), RangeError);
    await assert.rejects(
      lm.forward([
        { sequenceId: "valid", tokens: [3] },
        { sequenceId: "valid", tokens: [4] },
      ]),
      TypeError,
    );
    await assert.rejects(lm.forward([{ sequenceId: "valid", tokens: tokens(CONTEXT, 23) }]), ContextLengthError);
    assert.throws(() => lm.truncate("valid", -1), RangeError);
    assert.equal(lm.sequenceLength("valid"), 5);
    const [empty, one] = await lm.forward([
      { sequenceId: "valid", tokens: [] },
      { sequenceId: "other", tokens: [3] },
    ]);
    assert.equal(empty.length, 0);
    assert.equal(one.length, VOCAB);
    assert.equal(lm.sequenceLength("valid"), 5);
    lm.release("valid");
    lm.release("other");
  });

  test("forwards issued together run one after another on consistent caches", async () => {
    const first = tokens(9, 24);
    const second = tokens(4, 25);
    const [a, b] = await Promise.all([
      lm.forward([{ sequenceId: "concurrent", tokens: first }]),
      lm.forward([{ sequenceId: "concurrent", tokens: second }]),
    ]);
    assertClose(a[0], await alone([], first), "first");
    assertClose(b[0], await alone(first, second), "second");
    lm.release("concurrent");
  });

  test("a sequence released while its forward runs does not come back", async () => {
    const pending = lm.forward([{ sequenceId: "leaving", tokens: tokens(6, 26) }]);
    await Promise.resolve();
    lm.release("leaving");
    await pending;
    assert.equal(lm.sequenceLength("leaving"), 0);
    assert.equal(lm.cacheBytes(), 0);
  });
});

/**
 * Writes the tiny model as some exports are made: no position_ids input, positions counted inside the graph from the
 * cache width, which holds only for rows without padding or gaps.
 */
async function writeModelWithoutPositionIds(dir: string): Promise<void> {
  const weights = randomLlamaWeights({ vocab: VOCAB, dim: 32, layers: 2, heads: 4, kvHeads: 2, maxSeqLen: CONTEXT });
  const graph = buildLlamaGraph(weights);
  const firstNew = graph.nodes.length;
  // Positions past_length .. past_length + new - 1, with past_length = attention_mask width − new tokens.
  const scalar = (value: string) => graph.op("Squeeze", [value, graph.ints([0])]);
  const total = scalar(graph.op("Shape", ["attention_mask"], { start: 1, end: 2 }));
  const newTokens = scalar(graph.op("Shape", ["input_ids"], { start: 1, end: 2 }));
  const positions = graph.op("Range", [
    graph.op("Sub", [total, newTokens]),
    total,
    graph.constant(BigInt64Array.of(1n), []),
  ]);
  graph.op("Unsqueeze", [positions, graph.ints([0])], {}, { outputs: ["position_ids"] });
  // The new nodes read graph inputs only, so moving them first keeps the node list topologically sorted.
  graph.nodes.unshift(...graph.nodes.splice(firstNew));
  graph.inputs.splice(
    graph.inputs.findIndex((input) => input.name === "position_ids"),
    1,
  );
  await mkdir(join(dir, "onnx"), { recursive: true });
  await writeFile(
    join(dir, "onnx", "model.onnx"),
    serializeModel(graph, { graphName: "no-position-ids", opset: OPSET }).model,
  );
  const config = toHfConfig(weights.config, true, { variant: "random", source: "random", realVocabSize: VOCAB }, false);
  await writeFile(join(dir, "config.json"), JSON.stringify(config));
}

describe("OnnxCausalLM on a graph without position_ids", () => {
  test("runs each sequence of a batch alone, compact, and still matches unbatched forwards", async () => {
    const modelDir = join(dir, "no-position-ids");
    await writeModelWithoutPositionIds(modelDir);
    const plain = await OnnxCausalLM.load(modelDir);
    try {
      assert.equal(plain.layout.hasPositionIds, false);
      // Its attention_mask reads a tree block, but a tree's positions could not be given.
      assert.equal(plain.layout.hasTreeMask, false);
      await assert.rejects(plain.forward([treeRequest("a", 9, NARROW)]), UnsupportedModelError);
      const history = { a: tokens(30, 30), b: tokens(4, 31) };
      await plain.forward([
        { sequenceId: "a", tokens: history.a },
        { sequenceId: "b", tokens: history.b },
      ]);
      await plain.forward([{ sequenceId: "a", tokens: tokens(5, 32) }]);
      plain.truncate("a", 30);
      const runsBefore = plain.stats().runs;
      const step = [
        { sequenceId: "b", tokens: tokens(3, 33) },
        { sequenceId: "a", tokens: tokens(2, 34) },
      ];
      const [b, a] = await plain.forward(step);
      assert.equal(plain.stats().runs, runsBefore + 2);
      const expected = async (id: string, past: number[], appended: number[]) => {
        await plain.forward([{ sequenceId: id, tokens: past }]);
        const [logits] = await plain.forward([{ sequenceId: id, tokens: appended }]);
        return logits;
      };
      assertClose(a, await expected("a-alone", history.a, step[1].tokens), "a");
      assertClose(b, await expected("b-alone", history.b, step[0].tokens), "b");
      // And the runtime's positions agree with the graph's own: same logits as the model with position_ids.
      assertClose(a, await alone(history.a, step[1].tokens), "a against the model with position_ids");
    } finally {
      await plain.close();
    }
  });
});

// root → 0, 1; 0 → 2, 3; 1 → 4; 2 → 5 (slots: root 0, node i at i + 1), and a smaller tree of another shape.
const WIDE = tokenTree([5, 7, 3, 4, 9, 2], [ROOT, ROOT, 0, 0, 1, 2]);
const NARROW = tokenTree([11, 12, 13], [ROOT, 0, ROOT]);

/** A forward of the root and a tree's nodes, each seeing its ancestors, at the cached length + its depth. */
function treeRequest(sequenceId: string, root: number, tree: TokenTree): ForwardRequest {
  return { sequenceId, tokens: [root, ...tree.tokens], tree: { mask: treeMask(tree), depths: treePositions(tree, 0) } };
}

/** The tokens a sequence holds after its tree forward is compacted to `path`. */
function accepted(history: readonly number[], root: number, tree: TokenTree, path: readonly number[]): number[] {
  return [...history, root, ...pathTokens(tree, path)];
}

/** Each slot's row of a tree forward equals the last row of its root-to-node path run alone as a chain. */
async function assertPathsMatch(
  model: OnnxCausalLM,
  logits: Float32Array,
  history: readonly number[],
  root: number,
  tree: TokenTree,
  what: string,
): Promise<void> {
  const vocab = model.info.vocabSize;
  assert.equal(logits.length, (tree.tokens.length + 1) * vocab);
  for (let node = ROOT; node < tree.tokens.length; node++) {
    const chain = [root, ...pathTokens(tree, pathTo(tree, node))];
    const expected = await alone(history, chain, model);
    const slot = slotOf(node);
    assertClose(
      logits.subarray(slot * vocab, (slot + 1) * vocab),
      expected.subarray((chain.length - 1) * vocab),
      `${what}, slot ${slot}`,
    );
  }
}

/** Compacts a sequence to the root and `path` of the tree it just scored at cached length `pastLength`. */
function keepPath(model: OnnxCausalLM, sequenceId: string, pastLength: number, path: readonly number[]): void {
  const plan = compactionPlan(path, pastLength);
  model.compact(sequenceId, pastLength, Array.from(plan.kept));
  assert.equal(model.sequenceLength(sequenceId), plan.length);
  assert.equal(model.cacheBytes(sequenceId), plan.length * model.info.kvBytesPerToken);
}

describe("OnnxCausalLM tree forwards", () => {
  test("a tree's logits equal, node by node, those of its root-to-node paths run alone", async () => {
    const [fresh] = await lm.forward([treeRequest("tree", 9, NARROW)]);
    await assertPathsMatch(lm, fresh, [], 9, NARROW, "without a past");
    lm.release("tree");

    const history = tokens(20, 40);
    await lm.forward([{ sequenceId: "tree", tokens: history }]);
    const [logits] = await lm.forward([treeRequest("tree", 9, WIDE)]);
    assert.equal(lm.sequenceLength("tree"), 20 + 7);
    await assertPathsMatch(lm, logits, history, 9, WIDE, "after 20 tokens");
    lm.release("tree");
  });

  test("one padded batch scores trees of different sizes and pasts beside a chain and a newcomer", async () => {
    const histories = { wide: tokens(30, 41), narrow: tokens(5, 42), chain: tokens(12, 43) };
    await lm.forward(Object.entries(histories).map(([sequenceId, history]) => ({ sequenceId, tokens: history })));
    const chainTokens = tokens(3, 44);
    const [wide, chain, narrow, newcomer] = await lm.forward([
      treeRequest("wide", 9, WIDE),
      { sequenceId: "chain", tokens: chainTokens },
      treeRequest("narrow", 17, NARROW),
      treeRequest("newcomer", 23, NARROW),
    ]);
    await assertPathsMatch(lm, wide, histories.wide, 9, WIDE, "wide");
    await assertPathsMatch(lm, narrow, histories.narrow, 17, NARROW, "narrow");
    await assertPathsMatch(lm, newcomer, [], 23, NARROW, "newcomer");
    assertClose(chain, await alone(histories.chain, chainTokens), "chain");
    for (const id of ["wide", "chain", "narrow", "newcomer"]) lm.release(id);
  });

  test("after compaction to the accepted path the cache equals a fresh prefill of the accepted tokens", async () => {
    const history = tokens(20, 45);
    await lm.forward([{ sequenceId: "kept", tokens: history }]);
    await lm.forward([treeRequest("kept", 9, WIDE)]);
    const path = pathTo(WIDE, 5);
    keepPath(lm, "kept", history.length, path);
    const next = tokens(2, 46);
    const [logits] = await lm.forward([{ sequenceId: "kept", tokens: next }]);
    const text = accepted(history, 9, WIDE, path);
    assertClose(logits, await alone(text, next), "next forward after compaction");

    // A second round on the compacted cache, this time accepting nothing but the root.
    const [again] = await lm.forward([treeRequest("kept", 31, NARROW)]);
    const afterNext = [...text, ...next];
    await assertPathsMatch(lm, again, afterNext, 31, NARROW, "tree over a compacted cache");
    keepPath(lm, "kept", afterNext.length, []);
    const [last] = await lm.forward([{ sequenceId: "kept", tokens: [3] }]);
    assertClose(last, await alone([...afterNext, 31], [3]), "after keeping the root only");
    lm.release("kept");
  });

  test("compaction in a batch: the next batched forward, zero-copy or assembled, equals fresh prefills", async () => {
    const histories = { a: tokens(25, 47), b: tokens(8, 48) };
    await lm.forward(Object.entries(histories).map(([sequenceId, history]) => ({ sequenceId, tokens: history })));
    await lm.forward([treeRequest("a", 9, WIDE), treeRequest("b", 17, NARROW)]);
    const paths = { a: pathTo(WIDE, 4), b: pathTo(NARROW, 1) };
    keepPath(lm, "a", histories.a.length, paths.a);
    keepPath(lm, "b", histories.b.length, paths.b);
    const texts = {
      a: accepted(histories.a, 9, WIDE, paths.a),
      b: accepted(histories.b, 17, NARROW, paths.b),
    };

    const zeroCopyBefore = lm.stats().zeroCopyRuns;
    const step = { a: tokens(2, 49), b: tokens(1, 50) };
    const [a, b] = await lm.forward([
      { sequenceId: "a", tokens: step.a },
      { sequenceId: "b", tokens: step.b },
    ]);
    assert.equal(lm.stats().zeroCopyRuns, zeroCopyBefore + 1, "the tree forward's block is fed back as the past");
    assertClose(a, await alone(texts.a, step.a), "a, zero-copy");
    assertClose(b, await alone(texts.b, step.b), "b, zero-copy");

    // Another tree round, compacted again, then a batch with a newcomer: the past is copied together this time.
    await lm.forward([treeRequest("a", 5, NARROW), { sequenceId: "b", tokens: [6] }]);
    keepPath(lm, "a", texts.a.length + step.a.length, pathTo(NARROW, 2));
    const afterA = [...texts.a, ...step.a, 5, ...pathTokens(NARROW, pathTo(NARROW, 2))];
    const afterB = [...texts.b, ...step.b, 6];
    const [a2, b2] = await lm.forward([
      { sequenceId: "a", tokens: [7] },
      { sequenceId: "b", tokens: [8] },
      { sequenceId: "joiner", tokens: tokens(4, 51) },
    ]);
    assertClose(a2, await alone(afterA, [7]), "a, assembled");
    assertClose(b2, await alone(afterB, [8]), "b, assembled");
    for (const id of ["a", "b", "joiner"]) lm.release(id);
  });

  test("refuses bad trees and bad compactions without touching the caches", async () => {
    await lm.forward([{ sequenceId: "strict", tokens: tokens(6, 52) }]);
    const request = treeRequest("strict", 9, NARROW);
    const withTree = (mask: Uint8Array, depths: readonly number[]) => [
      { ...request, tree: { mask, depths } } as ForwardRequest,
    ];
    const depths = Array.from(treePositions(NARROW, 0));
    const mask = treeMask(NARROW);
    const upper = mask.slice();
    upper[1] = 1;
    const blind = mask.slice();
    blind[5] = 0;
    await assert.rejects(lm.forward(withTree(mask.subarray(1), depths)), RangeError);
    await assert.rejects(lm.forward(withTree(upper, depths)), /may see earlier tokens only/);
    await assert.rejects(lm.forward(withTree(blind, depths)), /a token sees itself/);
    await assert.rejects(lm.forward(withTree(mask, [0, 1, 2, CONTEXT])), RangeError);
    assert.equal(lm.sequenceLength("strict"), 6);

    await lm.forward([request]);
    assert.throws(() => lm.compact("strict", 6, [0, 2, 1]), RangeError);
    assert.throws(() => lm.compact("strict", 6, [0, 4]), RangeError);
    assert.throws(() => lm.compact("strict", 11, []), RangeError);
    assert.throws(() => lm.compact("strict", -1, []), RangeError);
    assert.equal(lm.sequenceLength("strict"), 10);
    const pending = lm.forward([{ sequenceId: "strict", tokens: [1] }]);
    assert.throws(() => lm.compact("strict", 6, [0]), /forward pending/);
    await pending;
    lm.release("strict");
  });
});

describe("OnnxCausalLM tree forwards on stories260k", () => {
  let stories: OnnxCausalLM;
  before(async () => {
    stories = await OnnxCausalLM.load("stories260k");
  });
  after(async () => {
    await stories.close();
  });

  test("match the root-to-node paths, alone and batched, and compact to a fresh prefill", async () => {
    const histories = { wide: tokens(40, 60), narrow: tokens(9, 61) };
    await stories.forward(Object.entries(histories).map(([sequenceId, history]) => ({ sequenceId, tokens: history })));
    const [wide, narrow] = await stories.forward([treeRequest("wide", 300, WIDE), treeRequest("narrow", 400, NARROW)]);
    await assertPathsMatch(stories, wide, histories.wide, 300, WIDE, "wide");
    await assertPathsMatch(stories, narrow, histories.narrow, 400, NARROW, "narrow");
    const path = pathTo(WIDE, 3);
    keepPath(stories, "wide", histories.wide.length, path);
    const [next] = await stories.forward([{ sequenceId: "wide", tokens: [42, 43] }]);
    assertClose(next, await alone(accepted(histories.wide, 300, WIDE, path), [42, 43], stories), "after compaction");
    stories.release("wide");
    stories.release("narrow");
  });
});

/** Renames attention_mask's width as Optimum exports do, so the runtime takes the graph for one without a tree mask. */
async function writeOptimumExport(dir: string): Promise<void> {
  const weights = randomLlamaWeights({ vocab: VOCAB, dim: 32, layers: 2, heads: 4, kvHeads: 2, maxSeqLen: CONTEXT });
  const graph = buildLlamaGraph(weights);
  const mask = graph.inputs.find((input) => input.name === "attention_mask");
  const dims = mask?.type?.tensorType?.shape?.dim;
  assert.ok(dims);
  dims[1] = { dimParam: "total_sequence_length" };
  await mkdir(join(dir, "onnx"), { recursive: true });
  await writeFile(join(dir, "onnx", "model.onnx"), serializeModel(graph, { graphName: "optimum", opset: OPSET }).model);
  const config = toHfConfig(weights.config, true, { variant: "random", source: "random", realVocabSize: VOCAB }, false);
  await writeFile(join(dir, "config.json"), JSON.stringify(config));
}

describe("OnnxCausalLM on an export without a tree mask", () => {
  test("refuses a tree with a clear error and still serves chains", async () => {
    const modelDir = join(dir, "optimum");
    await writeOptimumExport(modelDir);
    const optimum = await OnnxCausalLM.load(modelDir);
    try {
      assert.equal(optimum.layout.hasTreeMask, false);
      const history = tokens(12, 62);
      await optimum.forward([{ sequenceId: "s", tokens: history }]);
      await assert.rejects(
        optimum.forward([treeRequest("s", 9, WIDE)]),
        (error: unknown) => error instanceof UnsupportedModelError && /scores chains only/.test(error.message),
      );
      assert.equal(optimum.sequenceLength("s"), 12);
      const [logits] = await optimum.forward([{ sequenceId: "s", tokens: [9, 5, 3] }]);
      assertClose(logits, await alone(history, [9, 5, 3]), "chain");
    } finally {
      await optimum.close();
    }
  });
});
