/** Errors the model runtime raises for conditions callers handle (not bugs): each maps to one gRPC status later. */

/** A forward would make the KV caches exceed `maxCacheBytes`; nothing was run and no cache changed. */
export class CacheCapacityError extends Error {
  override readonly name = "CacheCapacityError";
  constructor(
    readonly requestedBytes: number,
    readonly maxCacheBytes: number,
  ) {
    super(`KV cache would hold ${requestedBytes} bytes, over the cap of ${maxCacheBytes} bytes`);
  }
}

/** A sequence would grow past the model's context length; nothing was run and no cache changed. */
export class ContextLengthError extends Error {
  override readonly name = "ContextLengthError";
  constructor(
    readonly sequenceId: string,
    readonly length: number,
    readonly contextLength: number,
  ) {
    super(`sequence ${sequenceId} would hold ${length} tokens, over the model's context length of ${contextLength}`);
  }
}

/** The model directory or graph does not have the layout the runtime supports. */
export class UnsupportedModelError extends Error {
  override readonly name = "UnsupportedModelError";
}
