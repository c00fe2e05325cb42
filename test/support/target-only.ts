/** The reference every distributed path must reproduce: in-process target-only greedy decoding of each prompt. */
import { generate } from "../../services/engine/generate.ts";
import { OnnxCausalLM } from "../../services/runtime/onnx-causal-lm.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";

/** Generated token ids per prompt (encoded with BOS, as the gateway does). */
export async function targetOnlyOutputs(
  model: string,
  tokenizer: Tokenizer,
  prompts: readonly string[],
  maxNewTokens: number,
): Promise<Map<string, number[]>> {
  const reference = await OnnxCausalLM.load(model);
  try {
    const outputs = new Map<string, number[]>();
    for (const prompt of prompts) {
      outputs.set(
        prompt,
        (await generate(reference, tokenizer.encode(prompt, { bos: true }), { maxNewTokens })).tokens,
      );
    }
    return outputs;
  } finally {
    await reference.close();
  }
}
