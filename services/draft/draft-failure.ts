/**
 * How a draft service failure concerning one sequence crosses the wire: a DraftError with a code, after which the
 * stream carries on.
 */
import type { DraftErrorCode__Output } from "../../gen/specgate/v1/DraftErrorCode.ts";
import { CacheCapacityError, ContextLengthError } from "../runtime/runtime-errors.ts";

/** A per-sequence failure that crosses the wire as a DraftError with this code; the stream carries on. */
export class DraftFailure extends Error {
  override readonly name = "DraftFailure";
  constructor(
    readonly code: DraftErrorCode__Output,
    message: string,
  ) {
    super(message);
  }
}

export function invalidArgument(message: string): DraftFailure {
  return new DraftFailure("DRAFT_ERROR_INVALID_ARGUMENT", message);
}

/** Any error as the DraftFailure it crosses the wire as (runtime limits get their own codes). */
export function asDraftFailure(error: unknown): DraftFailure {
  if (error instanceof DraftFailure) return error;
  if (error instanceof CacheCapacityError) return new DraftFailure("DRAFT_ERROR_RESOURCE_EXHAUSTED", error.message);
  if (error instanceof ContextLengthError) return invalidArgument(error.message);
  return new DraftFailure("DRAFT_ERROR_INTERNAL", error instanceof Error ? error.message : String(error));
}
