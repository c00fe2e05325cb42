import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { medusaChain, medusaTree } from "../../services/engine/medusa-proposal.ts";
import { costScale, type LlamaShape } from "../../services/model-builder/cost-scale.ts";
import type { LlamaWeights, Matrix, MedusaHead } from "../../services/model-builder/llama-weights.ts";
import { initialHeads, readHeadSet, writeHeadSet } from "../../services/model-builder/medusa-heads.ts";
import { writeModelDir } from "../../services/model-builder/model-dir.ts";
import { randomLlamaWeights, uniform } from "../../services/model-builder/random-llama.ts";
import { isMedusaLM } from "../../services/runtime/causal-lm.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";

const VOCAB = 48;
const DIM = 16;
const HEADS = 3;

/** Heads with random residual blocks (not the zero start), so the test sees W, b and the activation. */
function randomHeads(weights: LlamaWeights, projection: "shared" | "own", seed: number): MedusaHead[] {
  const next = uniform(seed);
  return initialHeads(weights, HEADS, projection).map((head) => {
    head.residual.data.forEach((_, i) => {
      head.residual.data[i] = (2 * next() - 1) * 0.5;
    });
    head.bias.forEach((_, i) => {
      head.bias[i] = 2 * next() - 1;
    });
    const own = head.projection?.data ?? new Float32Array(0);
    for (let i = 0; i < own.length; i++) own[i] += 0.1 * (2 * next() - 1);
    return head;
  });
}

/** Head logits computed in TypeScript from a hidden state: the reference the graph must match. */
function referenceHead(head: MedusaHead, classifier: Matrix, x: Float32Array): Float64Array {
  const y = Float64Array.from(x);
  for (let r = 0; r < DIM; r++) {
    let pre = head.bias[r];
    for (let c = 0; c < DIM; c++) pre += head.residual.data[r * DIM + c] * x[c];
    y[r] += pre / (1 + Math.exp(-pre));
  }
  const p = head.projection ?? classifier;
  return Float64Array.from({ length: p.rows }, (_, v) => {
    let sum = 0;
    for (let c = 0; c < DIM; c++) sum += p.data[v * DIM + c] * y[c];
    return sum;
  });
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, what);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

describe("Medusa heads in the graph", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "specgate-medusa-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function load(name: string, weights: LlamaWeights): Promise<OnnxCausalLM> {
    await writeModelDir(join(dir, name), weights, {
      variant: "medusa-test",
      source: "random",
      realVocabSize: weights.config.realVocabSize,
      details: {},
    });
    return OnnxCausalLM.load(join(dir, name));
  }

  for (const projection of ["shared", "own"] as const) {
    it(`outputs every head's logits at every position (${projection} projection)`, async () => {
      const base = randomLlamaWeights({ vocab: VOCAB, dim: DIM, seed: 5 });
      const heads = randomHeads(base, projection, 9);
      const lm = await load(`tiny-${projection}`, { ...base, medusa: heads });
      try {
        assert.ok(isMedusaLM(lm));
        assert.deepEqual(lm.medusa, { heads: HEADS, hiddenSize: DIM });
        const tokens = [3, 17, 4, 40, 11];
        const [logits] = await lm.forward([{ sequenceId: "a", tokens }]);
        const outputs = lm.lastHeadOutputs("a");
        assert.ok(outputs);
        assert.equal(outputs.medusaLogits.length, tokens.length * HEADS * VOCAB);
        for (let t = 0; t < tokens.length; t++) {
          const x = outputs.hiddenStates.subarray(t * DIM, (t + 1) * DIM);
          // The hidden state is what the classifier reads: its logits row follows from it.
          close(
            logits.subarray(t * VOCAB, (t + 1) * VOCAB),
            referenceHead(initialHeads(base, 1, "shared")[0], base.embedding, x),
            1e-3,
            `logits ${t}`,
          );
          heads.forEach((head, i) => {
            const row = outputs.medusaLogits.subarray((t * HEADS + i) * VOCAB, (t * HEADS + i + 1) * VOCAB);
            close(row, referenceHead(head, base.embedding, x), 1e-3, `head ${i} at ${t}`);
          });
        }
        lm.release("a");
        assert.equal(lm.lastHeadOutputs("a"), undefined);
      } finally {
        await lm.close();
      }
    });
  }

  it("keeps its heads' logits when cost-scaled", async () => {
    const base = randomLlamaWeights({ vocab: VOCAB, dim: DIM, seed: 6 });
    const withHeads = { ...base, medusa: randomHeads(base, "shared", 10) };
    const shape: LlamaShape = { dim: 32, hiddenDim: 80, nLayers: 3, nHeads: 4, nKvHeads: 2, headDim: 8, vocabSize: 64 };
    const [small, big] = [await load("small", withHeads), await load("big", costScale(withHeads, shape))];
    try {
      const tokens = [1, 30, 2, 7];
      await small.forward([{ sequenceId: "s", tokens }]);
      await big.forward([{ sequenceId: "s", tokens }]);
      const a = small.lastHeadOutputs("s")?.medusaLogits as Float32Array;
      const b = big.lastHeadOutputs("s")?.medusaLogits as Float32Array;
      for (let row = 0; row < tokens.length * HEADS; row++) {
        close(b.subarray(row * 64, row * 64 + VOCAB), a.subarray(row * VOCAB, (row + 1) * VOCAB), 1e-3, `row ${row}`);
        assert.ok(
          b.subarray(row * 64 + VOCAB, (row + 1) * 64).every((x) => x < -1e8),
          "padded ids stay masked",
        );
      }
    } finally {
      await small.close();
      await big.close();
    }
  });

  it("leaves a plain decoder without heads", async () => {
    const lm = await load("plain", randomLlamaWeights({ vocab: VOCAB, dim: DIM, seed: 7 }));
    try {
      assert.equal(isMedusaLM(lm), false);
      await lm.forward([{ sequenceId: "p", tokens: [1, 2] }]);
      assert.equal(lm.lastHeadOutputs("p"), undefined);
    } finally {
      await lm.close();
    }
  });

  it("round-trips a head set through its files", async () => {
    const base = randomLlamaWeights({ vocab: VOCAB, dim: DIM, seed: 8 });
    for (const projection of ["shared", "own"] as const) {
      const heads = randomHeads(base, projection, 11);
      const info = { heads: HEADS, dim: DIM, vocabSize: VOCAB, projection, training: { seed: 1 } };
      await writeHeadSet(join(dir, "heads"), projection, { info, heads });
      const read = await readHeadSet(join(dir, "heads"), projection);
      assert.deepEqual(read?.info, info);
      read?.heads.forEach((head, i) => {
        assert.deepEqual(head.residual.data, heads[i].residual.data);
        assert.deepEqual(head.bias, heads[i].bias);
        assert.deepEqual(head.projection?.data, heads[i].projection?.data);
      });
    }
    assert.equal(await readHeadSet(join(dir, "heads"), "missing"), null);
  });
});

describe("Medusa proposals (pure)", () => {
  /** Heads whose softmax puts the given probabilities on tokens 0, 1, 2, … of a 6-token vocabulary. */
  const row = (perHead: number[][]): Float32Array =>
    Float32Array.from(perHead.flatMap((probs) => Array.from({ length: 6 }, (_, v) => Math.log(probs[v] ?? 1e-9))));

  it("grows the most probable products of the heads' candidates, parents first", () => {
    const heads = row([
      [0.6, 0.25, 0.15],
      [0.1, 0.5, 0.4],
      [0.9, 0.1],
    ]);
    const tree = medusaTree(heads, 6, { depth: 3, width: 2, nodes: 5 }, { temperature: 0 });
    // Path probabilities: 0 (.6), 0→1 (.30), 0→1→0 (.27), 1 (.25), 0→2 (.24), then 1→1 (.125) left out.
    assert.deepEqual(Array.from(tree.tokens), [0, 1, 0, 1, 2]);
    assert.deepEqual(Array.from(tree.parents), [-1, 0, 1, -1, 0]);
    assert.deepEqual(Array.from(tree.depths), [1, 2, 3, 1, 2]);
  });

  it("never goes deeper than the heads or wider than asked", () => {
    const heads = row([
      [0.5, 0.5],
      [0.5, 0.5],
    ]);
    const tree = medusaTree(heads, 6, { depth: 5, width: 1, nodes: 63 }, { temperature: 0 });
    assert.deepEqual(Array.from(tree.tokens), [0, 0]);
    assert.equal(medusaTree(heads, 6, { depth: 0, width: 3, nodes: 8 }, { temperature: 0 }).tokens.length, 0);
  });

  it("leaves out tokens the request's sampling can never emit", () => {
    const heads = row([[0.5, 0.3, 0.2]]);
    const tree = medusaTree(heads, 6, { depth: 1, width: 3, nodes: 3 }, { temperature: 1, topK: 2 });
    assert.deepEqual(Array.from(tree.tokens), [0, 1]);
  });

  it("chains each head's argmax, or draws from each head with its q", () => {
    const heads = row([
      [0.1, 0.7, 0.2],
      [0.8, 0.2],
      [0.2, 0.2, 0.6],
    ]);
    assert.deepEqual(medusaChain(heads, 6, 2, { temperature: 0 }, 1, 10), { tokens: [1, 0] });
    assert.deepEqual(medusaChain(heads, 6, 9, { temperature: 0 }, 1, 10).tokens, [1, 0, 2]);
    const sampled = medusaChain(heads, 6, 3, { temperature: 1 }, 4, 10);
    assert.equal(sampled.distributions?.length, 3);
    sampled.tokens.forEach((token, j) => {
      const q = sampled.distributions?.[j];
      assert.ok(q && Array.from(q.ids).includes(token));
    });
    assert.deepEqual(medusaChain(heads, 6, 3, { temperature: 1 }, 4, 10), sampled, "seeded draws repeat");
  });
});
