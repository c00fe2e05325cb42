/** Public entry point of the SDK (`import { SpecgateClient } from "@specgate/sdk"`). */

export {
  type BatchCallOptions,
  type CallOptions,
  type ClientOptions,
  DEFAULT_ADDRESS,
  type PageOptions,
  SpecgateClient,
  type StreamEvent,
  type SubmitBatchOptions,
  type TlsOptions,
} from "./client.ts";
export { RETRY_PUSHBACK_TRAILER, SpecgateError } from "./errors.ts";
export type { Batch__Output as Batch } from "./gen/specgate/v1/Batch.ts";
export type { BatchItemResult__Output as BatchItemResult } from "./gen/specgate/v1/BatchItemResult.ts";
export type { GenerateEnd__Output as GenerateEnd } from "./gen/specgate/v1/GenerateEnd.ts";
export type { GenerateResponse__Output as GenerateResponse } from "./gen/specgate/v1/GenerateResponse.ts";
export type { ListModelsResponse__Output as ListModelsResponse } from "./gen/specgate/v1/ListModelsResponse.ts";
export type { SpeculationStats__Output as SpeculationStats } from "./gen/specgate/v1/SpeculationStats.ts";
export type { TokenDelta__Output as TokenDelta } from "./gen/specgate/v1/TokenDelta.ts";
export {
  ACCEPTANCE_NAMES,
  type AcceptanceName,
  type BatchItemInput,
  type GenerateInput,
  toBatchItem,
  toGenerateRequest,
} from "./request.ts";
export type { RetryOptions } from "./retry.ts";
