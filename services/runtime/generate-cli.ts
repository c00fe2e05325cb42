/**
 * `npm run generate -- --model <name under models/ or path> --prompt "<text>" --max-tokens N [--json]`: target-only
 * greedy decoding in-process. The prompt is encoded with BOS prepended (llama2.c style).
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { greedyDecode } from "./greedy.ts";
import { OnnxCausalLM } from "./onnx-causal-lm.ts";
import { loadTokenizer } from "./tokenizer/load.ts";
import { TextStream } from "./tokenizer/text-stream.ts";

const USAGE = `usage: npm run generate -- --model <name under models/ or path> [--prompt "<text>"] [--max-tokens N] [--json]
  --model              model directory (config.json, onnx/model.onnx, tokenizer), or its name under models/
  --prompt             text to continue (default: empty, i.e. BOS alone)
  --max-tokens         tokens to generate at most, stopping early at EOS (default 256)
  --json               print one JSON object (token_ids, text, timings) instead of the text
  --execution-provider ONNX Runtime execution provider (default cpu)
  --device-id          device ordinal for GPU providers (default 0)
  --threads            intra-op threads (default: all cores)`;

const argsSchema = z.object({
  model: z.string({ error: "--model is required" }).min(1, "--model is required"),
  prompt: z.string().default(""),
  maxTokens: z.coerce
    .number({ error: "--max-tokens must be a number" })
    .int("--max-tokens must be an integer")
    .positive("--max-tokens must be positive")
    .default(256),
  json: z.boolean().default(false),
  executionProvider: z.string().min(1).default("cpu"),
  deviceId: z.coerce.number().int().min(0).default(0),
  threads: z.coerce.number().int().min(0).default(0),
});

function parseCommandLine(argv: string[]): z.output<typeof argsSchema> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      prompt: { type: "string" },
      "max-tokens": { type: "string" },
      json: { type: "boolean" },
      "execution-provider": { type: "string" },
      "device-id": { type: "string" },
      threads: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const parsed = argsSchema.safeParse({
    model: values.model,
    prompt: values.prompt,
    maxTokens: values["max-tokens"],
    json: values.json,
    executionProvider: values["execution-provider"],
    deviceId: values["device-id"],
    threads: values.threads,
  });
  if (!parsed.success) throw new TypeError(parsed.error.issues.map((issue) => issue.message).join("; "));
  return parsed.data;
}

async function main(): Promise<void> {
  const args = parseCommandLine(process.argv.slice(2));
  const lm = await OnnxCausalLM.load(args.model, {
    executionProvider: args.executionProvider,
    deviceId: args.deviceId,
    intraOpThreads: args.threads,
  });
  try {
    const tokenizer = await loadTokenizer(lm.files.dir);
    const promptIds = [lm.info.bosTokenId, ...tokenizer.encode(args.prompt)];
    const started = performance.now();
    const result = await greedyDecode(lm, promptIds, { maxTokens: args.maxTokens });
    const elapsedMs = performance.now() - started;
    const stream = new TextStream(tokenizer, promptIds);
    const text = stream.push(result.tokens) + stream.flush();
    if (!args.json) {
      console.log(args.prompt + text);
      return;
    }
    const decodeMs = result.stepMs.reduce((sum, ms) => sum + ms, 0);
    console.log(
      JSON.stringify({
        model: lm.info.name,
        prompt: args.prompt,
        prompt_token_ids: promptIds,
        token_ids: result.tokens,
        text,
        tokens_generated: result.tokens.length,
        elapsed_ms: round(elapsedMs),
        prefill_ms: round(result.prefillMs),
        tokens_per_s: round((result.tokens.length * 1000) / elapsedMs),
        decode_tokens_per_s: result.stepMs.length > 0 ? round((result.stepMs.length * 1000) / decodeMs) : null,
      }),
    );
  } finally {
    await lm.close();
  }
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

main().catch((error: unknown) => {
  console.error(`generate: ${error instanceof Error ? error.message : String(error)}`);
  if (error instanceof TypeError) console.error(USAGE);
  process.exit(1);
});
