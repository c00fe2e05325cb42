/** Errors the SDK surfaces: every failure carries its gRPC status code, as it crossed the wire. */
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";

/**
 * The trailer in which a gateway that refused a request for lack of room (RESOURCE_EXHAUSTED) says when to retry:
 * gRPC's retry pushback, which grpc clients with a retry policy honour too.
 */
export const RETRY_PUSHBACK_TRAILER = "grpc-retry-pushback-ms";

export class SpecgateError extends Error {
  override readonly name = "SpecgateError";
  /** gRPC status code (grpc.status), e.g. 3 = INVALID_ARGUMENT, 8 = RESOURCE_EXHAUSTED, 14 = UNAVAILABLE. */
  readonly code: status;
  /** The status message the server sent. */
  readonly details: string;
  readonly metadata: Metadata;

  constructor(code: status, details: string, metadata = new Metadata(), options?: ErrorOptions) {
    super(`${status[code] ?? code}: ${details}`, options);
    this.code = code;
    this.details = details;
    this.metadata = metadata;
  }

  /** Status code name, e.g. "INVALID_ARGUMENT". */
  get codeName(): string {
    return status[this.code] ?? String(this.code);
  }

  /** When the server suggests retrying, ms from the failure (RETRY_PUSHBACK_TRAILER); undefined if it did not. */
  get retryAfterMs(): number | undefined {
    const value = Number(this.metadata.get(RETRY_PUSHBACK_TRAILER)[0]);
    return Number.isFinite(value) && value >= 0 ? value : undefined;
  }

  static fromServiceError(error: ServiceError): SpecgateError {
    return new SpecgateError(error.code, error.details, error.metadata, { cause: error });
  }
}

/** Any thrown value as a SpecgateError (non-gRPC failures become UNKNOWN). */
export function toSpecgateError(error: unknown): SpecgateError {
  if (error instanceof SpecgateError) return error;
  if (isServiceError(error)) return SpecgateError.fromServiceError(error);
  return new SpecgateError(status.UNKNOWN, error instanceof Error ? error.message : String(error), undefined, {
    cause: error,
  });
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number" && "details" in error;
}
