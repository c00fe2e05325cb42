/**
 * Options of the model runtime: where ONNX Runtime executes the model and how much KV cache it may hold. Services embed
 * `runtimeOptionsSchema` in their own config schema; `parseRuntimeOptions` validates and fills the defaults.
 */
import type { InferenceSession } from "onnxruntime-node";
import { z } from "zod";

export const runtimeOptionsSchema = z
  .object({
    /** ONNX Runtime execution provider, e.g. "cpu", "cuda", "tensorrt", "webgpu", "dml". */
    executionProvider: z.string().min(1).default("cpu"),
    /** GPU ordinal for the providers that take one (ignored by cpu). */
    deviceId: z.number().int().min(0).default(0),
    /** Threads inside one operator; 0 lets ONNX Runtime use every core. */
    intraOpThreads: z.number().int().min(0).default(0),
    /** Threads across independent operators; 0 lets ONNX Runtime decide. */
    interOpThreads: z.number().int().min(0).default(0),
    /**
     * When ONNX Runtime's intra-op threads busy-wait for work. "run": only while a session run lasts (its operators
     * hand work over fast; afterwards the cores are free for the processes that carry the round on). "always": ONNX
     * Runtime's own default, which keeps them spinning for about 30 ms after every run: on a machine the services share,
     * that takes a core from the gateway, the draft service and Redis exactly when a round's messages pass through them.
     * "off": they sleep between tasks (slower runs, least CPU).
     */
    threadSpinning: z.enum(["run", "always", "off"]).default("run"),
    graphOptimizationLevel: z.enum(["disabled", "basic", "extended", "layout", "all"]).default("all"),
    /** Cap on the KV cache bytes held by all sequences together; a forward that would exceed it is refused. */
    maxCacheBytes: z.number().int().positive().default(Number.MAX_SAFE_INTEGER),
  })
  .strict();

export type RuntimeOptions = z.output<typeof runtimeOptionsSchema>;
export type RuntimeOptionsInput = z.input<typeof runtimeOptionsSchema>;

export function parseRuntimeOptions(input: RuntimeOptionsInput = {}): RuntimeOptions {
  const parsed = runtimeOptionsSchema.safeParse(input);
  if (!parsed.success) {
    throw new TypeError(`invalid runtime options: ${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}

const PROVIDERS_WITH_DEVICE_ID = new Set(["cuda", "tensorrt", "dml"]);

export function sessionOptions(options: RuntimeOptions): InferenceSession.SessionOptions {
  const provider = PROVIDERS_WITH_DEVICE_ID.has(options.executionProvider)
    ? ({ name: options.executionProvider, deviceId: options.deviceId } as InferenceSession.ExecutionProviderConfig)
    : options.executionProvider;
  return {
    executionProviders: [provider],
    graphOptimizationLevel: options.graphOptimizationLevel,
    ...(options.intraOpThreads > 0 ? { intraOpNumThreads: options.intraOpThreads } : {}),
    ...(options.interOpThreads > 0 ? { interOpNumThreads: options.interOpThreads } : {}),
    extra: {
      session: {
        intra_op: { allow_spinning: options.threadSpinning === "off" ? "0" : "1" },
        force_spinning_stop: options.threadSpinning === "run" ? "1" : "0",
      },
    },
  };
}
