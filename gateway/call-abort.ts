/**
 * Why and when a request's round loop stops early: the client cancels the call (or, over HTTP, goes away), its
 * deadline passes, or the gateway shuts down. The reason is an `Aborted` carrying the status the call ends with.
 */
import * as grpc from "@grpc/grpc-js";

export class Aborted extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

/** The calls a request arrives on: Generate (unary) and GenerateStream. */
type Call = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

export interface CallWatch {
  /** The call's deadline in ms since the epoch; 0 when it has none. */
  readonly deadlineMs: number;
  /** Stops watching (the request is over). */
  release(): void;
}

/**
 * Aborts `controller` with CANCELLED when `onCancel` reports the client gone, DEADLINE_EXCEEDED when `deadlineMs`
 * (ms since the epoch; not finite: none) passes. `onCancel` subscribes its argument and returns the unsubscribe.
 */
export function abortWithClient(
  controller: AbortController,
  onCancel: (cancel: () => void) => () => void,
  deadlineMs: number,
): CallWatch {
  const unsubscribe = onCancel(() =>
    controller.abort(new Aborted(grpc.status.CANCELLED, "the client cancelled the request")),
  );
  const timer = Number.isFinite(deadlineMs)
    ? setTimeout(
        () => controller.abort(new Aborted(grpc.status.DEADLINE_EXCEEDED, "the request's deadline passed")),
        Math.max(0, deadlineMs - Date.now()),
      )
    : undefined;
  return {
    deadlineMs: Number.isFinite(deadlineMs) ? deadlineMs : 0,
    release() {
      clearTimeout(timer);
      unsubscribe();
    },
  };
}

/** Aborts `controller` when the gRPC client cancels the call or its deadline passes. */
export function abortWithCall(call: Call, controller: AbortController): CallWatch {
  const deadline = call.getDeadline();
  return abortWithClient(
    controller,
    (cancel) => {
      call.on("cancelled", cancel);
      return () => call.off("cancelled", cancel);
    },
    deadline instanceof Date ? deadline.getTime() : Number(deadline),
  );
}
