/**
 * The target's exact sampling distribution over its first generated tokens, for the losslessness tests of speculative
 * sampling (in process and through the services): computed by enumerating, in batched forwards, every prefix the
 * sampling settings give positive probability.
 */

import { distribution, type SamplingParams } from "../../services/engine/sampling.ts";
import type { CausalLM } from "../../services/runtime/causal-lm.ts";

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
