/**
 * Errors as OpenAI's API answers them: `{"error": {"message", "type", "param", "code"}}` with the HTTP status that
 * says what went wrong. A request refused or failed by the gateway's core carries a gRPC status (requests.ts); it is
 * mapped here, so HTTP and gRPC clients are refused for the same reasons. What only the HTTP API checks (its own
 * fields, routes, unknown models) is thrown as an `HttpError` directly.
 */
import { status } from "@grpc/grpc-js";
import { requestStatus } from "../requests.ts";

export interface OpenAiErrorBody {
  readonly error: {
    readonly message: string;
    readonly type: string;
    readonly param: string | null;
    readonly code: string | null;
  };
}

export class HttpError extends Error {
  override readonly name = "HttpError";
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

/** 400: a field of the request is wrong; `param` names it. */
export function invalidField(param: string, message: string): HttpError {
  return new HttpError(400, "invalid_request_error", message, "invalid_value", param);
}

/** Seconds a client refused while draining (or without the admission's estimate) waits before it retries. */
const RETRY_AFTER_S = 1;

/** How each gRPC status a request can end with reads over HTTP. */
const FROM_GRPC: Partial<Record<status, { status: number; type: string; code: string }>> = {
  [status.INVALID_ARGUMENT]: { status: 400, type: "invalid_request_error", code: "invalid_value" },
  [status.UNAUTHENTICATED]: { status: 401, type: "authentication_error", code: "invalid_api_key" },
  [status.PERMISSION_DENIED]: { status: 403, type: "permission_error", code: "permission_denied" },
  [status.RESOURCE_EXHAUSTED]: { status: 429, type: "rate_limit_error", code: "rate_limit_exceeded" },
  [status.UNAVAILABLE]: { status: 503, type: "service_unavailable_error", code: "unavailable" },
  [status.DEADLINE_EXCEEDED]: { status: 504, type: "timeout_error", code: "deadline_exceeded" },
  // Nobody reads it (the client went away), but the access log does: nginx's "client closed request".
  [status.CANCELLED]: { status: 499, type: "cancelled", code: "cancelled" },
};

export interface HttpFailure {
  readonly status: number;
  readonly body: OpenAiErrorBody;
  /** Set for refusals worth retrying later (429, 503): the Retry-After header. */
  readonly retryAfterS?: number;
}

/** The HTTP answer to `error`, whether the HTTP layer or the gateway's core raised it. */
export function httpFailure(error: unknown): HttpFailure {
  if (error instanceof HttpError) {
    return {
      status: error.status,
      body: { error: { message: error.message, type: error.type, param: error.param, code: error.code } },
    };
  }
  const grpcStatus = requestStatus(error);
  const mapped = FROM_GRPC[grpcStatus.code] ?? { status: 500, type: "server_error", code: "internal_error" };
  return {
    status: mapped.status,
    body: { error: { message: grpcStatus.details, type: mapped.type, param: null, code: mapped.code } },
    ...((mapped.status === 429 || mapped.status === 503) && {
      // Retry-After counts whole seconds: the admission's estimate, rounded up.
      retryAfterS:
        grpcStatus.retryAfterMs === undefined ? RETRY_AFTER_S : Math.max(1, Math.ceil(grpcStatus.retryAfterMs / 1000)),
    }),
  };
}
