/**
 * The target's exact sampling distribution over its first generated tokens, for the losslessness tests of speculative
 * sampling (in process and through the services): computed by enumerating, in batched forwards, every prefix the
 * sampling settings give positive probability.
 */

import assert from "node:assert/strict";
import { distribution, type SamplingParams } from "../../services/engine/sampling.ts";
import type { CausalLM } from "../../services/runtime/causal-lm.ts";
import { chiSquareFit } from "./chi-square.ts";

export interface ExactDistributions {
  /** P(first token x, second token y) at index x * vocabSize + y. */
  readonly joint: Float64Array;
  /** P(third token z) at index z. */
  readonly marginal: Float64Array;
}

export async function exactDistributions(
  target: CausalLM,
  prompt: readonly number[],
  sampling: SamplingParams,
): Promise<ExactDistributions> {
  const vocab = target.info.vocabSize;
  const next = async (prefixes: number[][]) => {
    const ids = prefixes.map((_, i) => `exact-${i}`);
    const logits = await target.forward(prefixes.map((tokens, i) => ({ sequenceId: ids[i], tokens })));
    for (const id of ids) target.release(id);
    return logits.map((l) => distribution(l.subarray(l.length - vocab), sampling));
  };
  const support = (p: Float32Array) => Array.from(p.keys()).filter((token) => p[token] > 0);

  const [first] = await next([[...prompt]]);
  const firsts = support(first);
  const seconds = await next(firsts.map((x) => [...prompt, x]));
  const joint = new Float64Array(vocab * vocab);
  const pairs: [number, number][] = [];
  firsts.forEach((x, i) => {
    for (const y of support(seconds[i])) {
      joint[x * vocab + y] = first[x] * seconds[i][y];
      pairs.push([x, y]);
    }
  });
  const thirds = await next(pairs.map(([x, y]) => [...prompt, x, y]));
  const marginal = new Float64Array(vocab);
  pairs.forEach(([x, y], i) => {
    for (let z = 0; z < vocab; z++) marginal[z] += joint[x * vocab + y] * thirds[i][z];
  });
  return { joint, marginal };
}

/**
 * Asserts that sampled runs of at least three tokens follow `exact` (chi-square on the first two tokens jointly and on
 * the third), and that their rounds both accepted and rejected draft tokens, so that both paths were exercised.
 */
export function assertFollowsTarget(
  results: readonly {
    readonly tokens: readonly number[];
    readonly stats: { readonly accepted_tokens: number; readonly draft_tokens: number };
  }[],
  exact: ExactDistributions,
  vocab: number,
): void {
  const jointCounts = new Array(vocab * vocab).fill(0);
  const thirdCounts = new Array(vocab).fill(0);
  for (const { tokens } of results) {
    jointCounts[tokens[0] * vocab + tokens[1]]++;
    thirdCounts[tokens[2]]++;
  }
  const accepted = results.reduce((s, r) => s + r.stats.accepted_tokens, 0);
  const proposed = results.reduce((s, r) => s + r.stats.draft_tokens, 0);
  assert.ok(accepted > 0 && accepted < proposed, `both outcomes exercised (${accepted}/${proposed})`);
  for (const [what, observed, expected] of [
    ["first two tokens", jointCounts, exact.joint],
    ["third token", thirdCounts, exact.marginal],
  ] as const) {
    const fit = chiSquareFit(observed, expected);
    assert.equal(fit.impossible, 0, `${what}: tokens the target cannot produce`);
    assert.ok(fit.statistic < fit.critical, `${what}: chi-square ${fit.statistic} ≥ ${fit.critical}`);
  }
}
