/**
 * Why and when a request's round loop stops early: the client cancels the call, its deadline passes, or the gateway
 * shuts down. The reason is an `Aborted` carrying the status the call ends with.
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

/** Aborts `controller` with CANCELLED when the client cancels the call, DEADLINE_EXCEEDED when its deadline passes. */
export function abortWithCall(call: Call, controller: AbortController): CallWatch {
  const onCancel = () => controller.abort(new Aborted(grpc.status.CANCELLED, "the client cancelled the request"));
  call.on("cancelled", onCancel);
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : Number(deadline);
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
      call.off("cancelled", onCancel);
    },
  };
}
