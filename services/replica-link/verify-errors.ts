/**
 * Why a verify job failed, in a form that survives BullMQ: a job's failure reaches the gateway only as the text
 * `failedReason`, so the reason starts with a gRPC status name ("DEADLINE_EXCEEDED: ...") that the gateway reads
 * back with `parseVerifyFailure` to decide between answering the client and retrying on another replica.
 */

/** The status names a replica fails jobs with. */
export type VerifyFailureCode =
  /** The job is malformed (bad tokens, missing draft distributions, ...): retrying cannot help. */
  | "INVALID_ARGUMENT"
  /** The job asks for another target model than this replica serves: route it to a replica that serves it. */
  | "FAILED_PRECONDITION"
  /** The job's deadline had passed when the replica took it. */
  | "DEADLINE_EXCEEDED"
  /** The sequence does not fit the replica's KV cache cap even after evicting idle sequences. */
  | "RESOURCE_EXHAUSTED"
  /** The batched forward failed (or the replica is shutting down): the job may be retried on another replica. */
  | "UNAVAILABLE";

export class VerifyJobError extends Error {
  override readonly name = "VerifyJobError";
  constructor(
    readonly code: VerifyFailureCode,
    readonly detail: string,
  ) {
    super(`${code}: ${detail}`);
  }
}

const CODES: readonly VerifyFailureCode[] = [
  "INVALID_ARGUMENT",
  "FAILED_PRECONDITION",
  "DEADLINE_EXCEEDED",
  "RESOURCE_EXHAUSTED",
  "UNAVAILABLE",
];

/** The job's failure as a VerifyJobError (what the gateway reads back from the reply or the failedReason). */
export function asVerifyJobError(error: unknown): VerifyJobError {
  if (error instanceof VerifyJobError) return error;
  return new VerifyJobError("UNAVAILABLE", error instanceof Error ? error.message : String(error));
}

/** Reads a BullMQ `failedReason` back; reasons without a known code are UNAVAILABLE (worth a retry elsewhere). */
export function parseVerifyFailure(reason: string): VerifyJobError {
  const colon = reason.indexOf(": ");
  const code = CODES.find((c) => c === reason.slice(0, colon));
  return code ? new VerifyJobError(code, reason.slice(colon + 2)) : new VerifyJobError("UNAVAILABLE", reason);
}
