/**
 * Medusa head training on stories260K's own text, small enough for the unit suite: the weighted loss falls, and on
 * held-out text every head beats two floors. The unigram guess (the training labels' most frequent tokens) is what a
 * head earns without reading its position; the untrained head (the classifier, which predicts the NEXT token, not
 * the one i + 2 on) is where training starts. A head above both has learnt something about the tokens it is for.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import type { LlamaWeights } from "../../services/model-builder/llama-weights.ts";
import { readLlama2c } from "../../services/model-builder/llama2c.ts";
import {
  DEFAULT_TRAINING,
  type SelfWrittenText,
  type TrainingOptions,
  type TrainingReport,
  trainHeads,
  trainMedusaHeads,
} from "../../services/model-builder/medusa-train.ts";
import { defaultSourceDir, SOURCE_CHECKPOINT } from "../../services/model-builder/models-build.ts";

const SMALL: TrainingOptions = { ...DEFAULT_TRAINING, sequences: 32, tokens: 96, epochs: 2, heldOut: 0.25 };
let exact: LlamaWeights;

before(async () => {
  exact = (await readLlama2c(join(defaultSourceDir(), SOURCE_CHECKPOINT))).weights;
});

describe("Medusa head training", () => {
  it("lowers the loss and beats the unigram guess and the untrained heads on held-out text", async () => {
    const set = await trainMedusaHeads(exact, SMALL);
    const { report } = set.info.training as { report: TrainingReport };
    assert.equal(set.heads.length, SMALL.heads);
    assert.ok(report.loss[report.loss.length - 1] < report.loss[0] * 0.6, `loss ${report.loss.join(" → ")}`);
    report.heads.forEach((head, i) => {
      const floors = [report.unigram[i], report.untrained[i]];
      for (const floor of floors) {
        assert.ok(head.top1 > floor.top1, `head ${i} top-1 ${head.top1} vs ${floor.top1}`);
        assert.ok(head.top5 > floor.top5, `head ${i} top-5 ${head.top5} vs ${floor.top5}`);
      }
    });
    assert.ok(report.heads[0].top1 > 0.2, `head 0 top-1 ${report.heads[0].top1}`);
  });

  it("trains the same heads from the same text and seed", () => {
    // A text with structure (each token follows from the last) and random hidden states, so no model is needed.
    const dim = exact.config.dim;
    const texts = Array.from({ length: 6 }, (_, s) => ({
      tokens: Int32Array.from({ length: 24 }, (_, t) => (s * 7 + t * 3) % 40),
      hidden: Float32Array.from({ length: 23 * dim }, (_, i) => Math.sin(i * 0.37 + s)),
    }));
    const text: SelfWrittenText = { dim, texts };
    const options = { ...SMALL, epochs: 1, heldOut: 0.34 };
    const [a, b] = [trainHeads(exact, text, options), trainHeads(exact, text, options)];
    a.heads.forEach((head, i) => {
      assert.deepEqual(head.residual.data, b.heads[i].residual.data);
      assert.deepEqual(head.bias, b.heads[i].bias);
    });
    assert.ok(
      a.heads[0].residual.data.some((x) => x !== 0),
      "training moved the weights",
    );
  });
});
