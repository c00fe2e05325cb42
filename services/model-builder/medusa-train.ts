/**
 * Medusa head training by self-distillation, as Medusa-2 does it: the target writes its own text (a few sampled
 * tokens after BOS as a varied prompt, then greedy or sampled continuations), its final normalised hidden states are
 * the inputs, and the tokens it wrote the labels (head i at position t learns token t + 2 + i). The backbone is frozen;
 * head i's loss is weighted 0.8^i (deeper heads are less accurate and matter less: a tree reaches them less often).
 *
 * Plain typed arrays, not a framework: a head is one dim×dim residual block and a projection, so a training step is a
 * few matrix-vector products per position, written out with their gradients below; onnxruntime-node runs no backward
 * pass, and a training framework would be a heavy dependency for ~25k parameters per head. Adam, minibatches, a
 * seeded shuffle: the same seed gives the same heads.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Stream, uniform } from "../engine/rng.ts";
import { distribution, drawToken } from "../engine/sampling.ts";
import { isMedusaLM } from "../runtime/causal-lm.ts";
import { argmax } from "../runtime/greedy.ts";
import { OnnxCausalLM } from "../runtime/onnx-causal-lm.ts";
import type { LlamaWeights, MedusaHead } from "./llama-weights.ts";
import { type HeadProjection, type HeadSet, initialHeads } from "./medusa-heads.ts";
import { writeModelDir } from "./model-dir.ts";
import { uniform as seededUniform } from "./random-llama.ts";

export interface TrainingOptions {
  readonly heads: number;
  readonly projection: HeadProjection;
  readonly seed: number;
  /** Texts the target writes; the last `heldOut` share of them is kept for evaluation. */
  readonly sequences: number;
  /** Tokens per text (BOS included). */
  readonly tokens: number;
  readonly heldOut: number;
  readonly epochs: number;
  readonly batchSize: number;
  readonly learningRate: number;
  /** Loss weight of head i: decay^i. */
  readonly decay: number;
}

export const DEFAULT_TRAINING: TrainingOptions = {
  heads: 4,
  projection: "shared",
  seed: 17,
  sequences: 128,
  tokens: 160,
  heldOut: 0.125,
  epochs: 2,
  batchSize: 32,
  learningRate: 3e-3,
  decay: 0.8,
};

/** Softmax gradients below this are skipped (see the backward pass). */
const NEGLIGIBLE = 1e-5;

/** Sampled tokens after BOS that make each text's prompt. */
const PROMPT_TOKENS = 8;

/** The target's own text: per position its hidden state and the tokens (hidden row t has seen tokens 0..t). */
export interface SelfWrittenText {
  readonly dim: number;
  readonly texts: readonly { readonly tokens: Int32Array; readonly hidden: Float32Array }[];
}

/**
 * Lets `target` write `sequences` texts in one batched decode: BOS, PROMPT_TOKENS sampled at temperature 1, then greedy
 * (even texts) or sampled at temperature 1 (odd texts), so the heads see both the text greedy serving verifies and
 * the variety sampling brings.
 */
export async function writeText(target: OnnxCausalLM, options: TrainingOptions): Promise<SelfWrittenText> {
  if (!isMedusaLM(target)) throw new Error(`${target.info.name} has no hidden_states output`);
  const dim = target.medusa.hiddenSize;
  const vocab = target.info.vocabSize;
  const texts = Array.from({ length: options.sequences }, (_, s) => ({
    id: `medusa-text-${s}`,
    tokens: new Int32Array(options.tokens),
    hidden: new Float32Array((options.tokens - 1) * dim),
  }));
  for (const t of texts) t.tokens[0] = target.info.bosTokenId;
  try {
    for (let at = 0; at + 1 < options.tokens; at++) {
      const logits = await target.forward(texts.map((t) => ({ sequenceId: t.id, tokens: [t.tokens[at]] })));
      texts.forEach((t, s) => {
        t.hidden.set((target.lastHeadOutputs(t.id) as { hiddenStates: Float32Array }).hiddenStates, at * dim);
        const row = logits[s].subarray(0, vocab);
        const sampled = at < PROMPT_TOKENS || s % 2 === 1;
        t.tokens[at + 1] = sampled
          ? drawToken(distribution(row, { temperature: 1 }), uniform(options.seed + s, at, Stream.target))
          : argmax(row);
      });
    }
  } finally {
    for (const t of texts) target.release(t.id);
  }
  return { dim, texts: texts.map(({ tokens, hidden }) => ({ tokens, hidden })) };
}

/** Positions of some texts as training examples: hidden rows and, per head, the label (−1 past the text's end). */
interface Examples {
  readonly count: number;
  readonly hidden: Float32Array;
  readonly labels: Int32Array[];
}

function examples(text: SelfWrittenText, from: number, to: number, heads: number): Examples {
  const chosen = text.texts.slice(from, to);
  const rows = chosen.reduce((n, t) => n + t.tokens.length - 1, 0);
  const hidden = new Float32Array(rows * text.dim);
  const labels = Array.from({ length: heads }, () => new Int32Array(rows).fill(-1));
  let n = 0;
  for (const t of chosen) {
    const positions = t.tokens.length - 1;
    hidden.set(t.hidden, n * text.dim);
    for (let p = 0; p < positions; p++) {
      for (let i = 0; i < heads; i++) if (p + 2 + i < t.tokens.length) labels[i][n + p] = t.tokens[p + 2 + i];
    }
    n += positions;
  }
  return { count: rows, hidden, labels };
}

/** The classifier the heads end in: [vocab, dim] and the logits bias. */
interface Classifier {
  readonly weight: Float32Array;
  readonly bias: Float32Array | null;
  readonly vocab: number;
}

/** One head's forward at one position: the block's pre-activation, its output y and the logits. */
function headForward(
  head: MedusaHead,
  classifier: Classifier,
  x: Float32Array,
  pre: Float32Array,
  y: Float32Array,
  z: Float32Array,
): void {
  const dim = x.length;
  const w = head.residual.data;
  for (let r = 0; r < dim; r++) {
    let sum = head.bias[r];
    const base = r * dim;
    for (let c = 0; c < dim; c++) sum += w[base + c] * x[c];
    pre[r] = sum;
    y[r] = x[r] + sum / (1 + Math.exp(-sum));
  }
  const p = head.projection ? head.projection.data : classifier.weight;
  for (let v = 0; v < classifier.vocab; v++) {
    let sum = classifier.bias ? classifier.bias[v] : 0;
    const base = v * dim;
    for (let c = 0; c < dim; c++) sum += p[base + c] * y[c];
    z[v] = sum;
  }
}

/** Softmax in place; returns log-sum-exp. */
function softmax(z: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < z.length; i++) if (z[i] > max) max = z[i];
  let sum = 0;
  for (let i = 0; i < z.length; i++) {
    z[i] = Math.exp(z[i] - max);
    sum += z[i];
  }
  for (let i = 0; i < z.length; i++) z[i] /= sum;
  return max + Math.log(sum);
}

class Adam {
  private readonly m: Float32Array;
  private readonly v: Float32Array;
  private step = 0;
  constructor(
    private readonly param: Float32Array,
    private readonly lr: number,
  ) {
    this.m = new Float32Array(param.length);
    this.v = new Float32Array(param.length);
  }
  update(grad: Float32Array): void {
    this.step++;
    const b1 = 0.9;
    const b2 = 0.999;
    const c1 = 1 - b1 ** this.step;
    const c2 = 1 - b2 ** this.step;
    for (let i = 0; i < grad.length; i++) {
      const g = grad[i];
      this.m[i] = b1 * this.m[i] + (1 - b1) * g;
      this.v[i] = b2 * this.v[i] + (1 - b2) * g * g;
      this.param[i] -= (this.lr * (this.m[i] / c1)) / (Math.sqrt(this.v[i] / c2) + 1e-8);
    }
  }
}

export interface HeadAccuracy {
  readonly top1: number;
  readonly top5: number;
}

export interface TrainingReport {
  /** Weighted mean training loss over each epoch (the first entry: before training, on the same examples). */
  readonly loss: number[];
  /** Held-out accuracy per head, trained. */
  readonly heads: HeadAccuracy[];
  /** Held-out accuracy per head before training (each head = the classifier, predicting the next token). */
  readonly untrained: HeadAccuracy[];
  /** Held-out accuracy of always guessing the training labels' most frequent tokens, per head. */
  readonly unigram: HeadAccuracy[];
  readonly trainPositions: number;
  readonly heldOutPositions: number;
  readonly seconds: number;
}

/** Accuracy of each head on the examples. */
export function headAccuracy(heads: readonly MedusaHead[], classifier: Classifier, set: Examples): HeadAccuracy[] {
  const dim = heads[0].residual.cols;
  const pre = new Float32Array(dim);
  const y = new Float32Array(dim);
  const z = new Float32Array(classifier.vocab);
  return heads.map((head, i) => {
    let n = 0;
    let top1 = 0;
    let top5 = 0;
    for (let e = 0; e < set.count; e++) {
      const label = set.labels[i][e];
      if (label < 0) continue;
      headForward(head, classifier, set.hidden.subarray(e * dim, (e + 1) * dim), pre, y, z);
      const score = z[label];
      let above = 0;
      for (let v = 0; v < z.length; v++) if (z[v] > score || (z[v] === score && v < label)) above++;
      n++;
      if (above === 0) top1++;
      if (above < 5) top5++;
    }
    return { top1: top1 / n, top5: top5 / n };
  });
}

function unigramAccuracy(train: Examples, test: Examples, vocab: number): HeadAccuracy[] {
  return train.labels.map((labels, i) => {
    const counts = new Float64Array(vocab);
    for (const label of labels) if (label >= 0) counts[label]++;
    const ranked = Array.from(counts.keys()).sort((a, b) => counts[b] - counts[a] || a - b);
    const top1 = ranked[0];
    const top5 = new Set(ranked.slice(0, 5));
    let n = 0;
    let hit1 = 0;
    let hit5 = 0;
    for (const label of test.labels[i]) {
      if (label < 0) continue;
      n++;
      if (label === top1) hit1++;
      if (top5.has(label)) hit5++;
    }
    return { top1: hit1 / n, top5: hit5 / n };
  });
}

/** Trains heads on the text's first texts and reports their accuracy on the held-out rest. */
export function trainHeads(
  weights: LlamaWeights,
  text: SelfWrittenText,
  options: TrainingOptions,
  onEpoch: (epoch: number, loss: number) => void = () => {},
): { heads: MedusaHead[]; report: TrainingReport } {
  const started = performance.now();
  const cls = weights.classifier ?? weights.embedding;
  if (!("data" in cls)) throw new Error("Medusa heads need a dense classifier");
  const classifier: Classifier = { weight: cls.data, bias: weights.logitsBias, vocab: weights.config.vocabSize };
  const dim = text.dim;
  const split = Math.max(1, Math.round(text.texts.length * (1 - options.heldOut)));
  const train = examples(text, 0, split, options.heads);
  const test = examples(text, split, text.texts.length, options.heads);
  const heads = initialHeads(weights, options.heads, options.projection);
  const untrained = headAccuracy(heads, classifier, test);
  const optimisers = heads.map((h) => ({
    w: new Adam(h.residual.data, options.learningRate),
    b: new Adam(h.bias, options.learningRate),
    p: h.projection && new Adam(h.projection.data, options.learningRate),
  }));
  const grads = heads.map((h) => ({
    w: new Float32Array(dim * dim),
    b: new Float32Array(dim),
    p: h.projection && new Float32Array(h.projection.data.length),
  }));
  const pre = new Float32Array(dim);
  const y = new Float32Array(dim);
  const z = new Float32Array(classifier.vocab);
  const gy = new Float32Array(dim);
  const random = seededUniform(options.seed);
  const order = Int32Array.from({ length: train.count }, (_, i) => i);
  const lossCurve: number[] = [];

  /** Weighted loss of the batch; with `learn`, accumulates gradients and takes an Adam step per head. */
  const pass = (batch: Int32Array, learn: boolean): number => {
    let loss = 0;
    heads.forEach((head, i) => {
      const weight = options.decay ** i;
      const g = grads[i];
      const used = batch.filter((e) => train.labels[i][e] >= 0);
      if (used.length === 0) return;
      if (learn) {
        g.w.fill(0);
        g.b.fill(0);
        g.p?.fill(0);
      }
      const projection = head.projection ? head.projection.data : classifier.weight;
      for (const e of used) {
        const x = train.hidden.subarray(e * dim, (e + 1) * dim);
        const label = train.labels[i][e];
        headForward(head, classifier, x, pre, y, z);
        const logit = z[label];
        loss += (weight * (softmax(z) - logit)) / used.length;
        if (!learn) continue;
        // dL/dz = (softmax − onehot) · weight / batch; then back through the projection and the residual block.
        const scale = weight / used.length;
        z[label] -= 1;
        gy.fill(0);
        for (let v = 0; v < z.length; v++) {
          // Tokens the head gives almost no probability barely move it: skipping them halves a step's work.
          if (Math.abs(z[v]) < NEGLIGIBLE) continue;
          const gz = z[v] * scale;
          const base = v * dim;
          for (let c = 0; c < dim; c++) gy[c] += projection[base + c] * gz;
          if (g.p) for (let c = 0; c < dim; c++) g.p[base + c] += gz * y[c];
        }
        for (let r = 0; r < dim; r++) {
          const s = 1 / (1 + Math.exp(-pre[r]));
          const gpre = gy[r] * s * (1 + pre[r] * (1 - s));
          g.b[r] += gpre;
          const base = r * dim;
          for (let c = 0; c < dim; c++) g.w[base + c] += gpre * x[c];
        }
      }
      if (learn) {
        optimisers[i].w.update(g.w);
        optimisers[i].b.update(g.b);
        if (g.p) optimisers[i].p?.update(g.p);
      }
    });
    return loss;
  };

  const batches = Math.ceil(train.count / options.batchSize);
  const batchOf = (b: number) => order.subarray(b * options.batchSize, (b + 1) * options.batchSize);
  lossCurve.push(Array.from({ length: batches }, (_, b) => pass(batchOf(b), false)).reduce((a, b) => a + b) / batches);
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    let sum = 0;
    for (let b = 0; b < batches; b++) sum += pass(batchOf(b), true);
    lossCurve.push(sum / batches);
    onEpoch(epoch + 1, sum / batches);
  }
  return {
    heads,
    report: {
      loss: lossCurve,
      heads: headAccuracy(heads, classifier, test),
      untrained,
      unigram: unigramAccuracy(train, test, classifier.vocab),
      trainPositions: train.count,
      heldOutPositions: test.count,
      seconds: (performance.now() - started) / 1000,
    },
  };
}

/**
 * The whole recipe: the target (with placeholder heads, for its hidden_states output) written to a scratch folder,
 * its own text, then the heads trained on it.
 */
export async function trainMedusaHeads(
  exact: LlamaWeights,
  options: TrainingOptions = DEFAULT_TRAINING,
  onStage: (stage: string) => void = () => {},
): Promise<HeadSet> {
  const scratch = await mkdtemp(join(tmpdir(), "specgate-medusa-"));
  try {
    onStage("target writes its training text");
    const probe = { ...exact, medusa: initialHeads(exact, 1, "shared") };
    await writeModelDir(scratch, probe, {
      variant: "medusa-probe",
      source: "memory",
      sourceSha256: "",
      realVocabSize: exact.config.realVocabSize,
      details: {},
    });
    const target = await OnnxCausalLM.load(scratch);
    let text: SelfWrittenText;
    try {
      text = await writeText(target, options);
    } finally {
      await target.close();
    }
    onStage("training");
    const { heads, report } = trainHeads(exact, text, options, (epoch, loss) =>
      onStage(`epoch ${epoch}/${options.epochs}: loss ${loss.toFixed(3)}`),
    );
    return {
      info: {
        heads: options.heads,
        dim: exact.config.dim,
        vocabSize: exact.config.vocabSize,
        projection: options.projection,
        training: { options, report },
      },
      heads,
    };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
