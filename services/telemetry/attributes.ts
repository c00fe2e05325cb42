/**
 * Attribute names used on specgate's spans and metrics, in one place so that spans, metrics, dashboards and tests
 * agree. OpenTelemetry semantic conventions are used where one exists (gRPC: `rpc.*`; HTTP: `http.*`; generative AI:
 * `gen_ai.*`, whose names are copied here because the package only ships them as incubating); the rest is
 * `specgate.*`.
 */
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_RPC_METHOD,
  ATTR_RPC_STATUS_CODE,
  ATTR_RPC_SYSTEM_NAME,
} from "@opentelemetry/semantic-conventions";

export const ATTR = {
  // gRPC semantic conventions
  rpcSystem: ATTR_RPC_SYSTEM_NAME,
  rpcMethod: ATTR_RPC_METHOD,
  rpcStatus: ATTR_RPC_STATUS_CODE,
  errorType: ATTR_ERROR_TYPE,

  // HTTP semantic conventions (the OpenAI-compatible API)
  httpMethod: ATTR_HTTP_REQUEST_METHOD,
  httpRoute: ATTR_HTTP_ROUTE,
  httpStatus: ATTR_HTTP_RESPONSE_STATUS_CODE,

  // generative AI semantic conventions
  genAiOperation: "gen_ai.operation.name",
  /** The target model: the model whose output the client receives. */
  model: "gen_ai.request.model",
  maxTokens: "gen_ai.request.max_tokens",
  temperature: "gen_ai.request.temperature",
  topK: "gen_ai.request.top_k",
  topP: "gen_ai.request.top_p",
  seed: "gen_ai.request.seed",
  inputTokens: "gen_ai.usage.input_tokens",
  outputTokens: "gen_ai.usage.output_tokens",
  finishReasons: "gen_ai.response.finish_reasons",
  tokenType: "gen_ai.token.type",

  // who and with what
  tenant: "specgate.tenant",
  drafter: "specgate.drafter",
  replica: "specgate.replica",
  finishReason: "specgate.finish_reason",
  requestStatus: "specgate.request.status",
  cacheRole: "specgate.cache.role",

  // one round (span attributes or event attributes)
  round: "specgate.round",
  k: "specgate.round.k",
  proposed: "specgate.round.proposed",
  accepted: "specgate.round.accepted",
  /**
   * 1-based draft position (for a tree, depth) of the first rejected token; absent when every proposed token was
   * accepted (for a tree, when its accepted path reached a leaf).
   */
  firstRejection: "specgate.round.first_rejection",
  nextToken: "specgate.round.next_token",
  /** `bonus` (all proposed tokens accepted) or `correction` (the target's token at the first rejection). */
  nextTokenKind: "specgate.round.next_token_kind",
  reprefilled: "specgate.round.reprefilled",
  batchSize: "specgate.verify.batch_size",
  queueWaitMs: "specgate.verify.queue_wait_ms",
  draftMs: "specgate.draft.duration_ms",
  /** On a draft span: drafted on the target's verdict of the round before, without waiting for a Propose. */
  draftOnVerdict: "specgate.draft.on_verdict",
  verifyMs: "specgate.verify.duration_ms",
  roundMs: "specgate.round.duration_ms",
  /** Set on a round span the request ended before the round's result arrived. */
  roundAbandoned: "specgate.round.abandoned",

  // metric-only attributes
  position: "specgate.draft.position",
  phase: "specgate.round.phase",
} as const;

/** Request span attribute of a field of the statistics returned to the client: `specgate.<field>`. */
export function statAttribute(field: string): string {
  return `specgate.${field}`;
}

export const RPC_SYSTEM_GRPC = "grpc";
export const GEN_AI_OPERATION_TEXT_COMPLETION = "text_completion";

/** Instrumentation scope of every specgate tracer and meter. */
export const TELEMETRY_SCOPE = "specgate";
