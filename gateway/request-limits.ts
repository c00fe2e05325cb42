/**
 * The sizes a Gateway call may have: the encoded request, its metadata, the strings and lists inside it. Each bound
 * keeps one caller from costing the gateway much more than its request is worth (tokenizing megabytes of text,
 * echoing megabytes back in an error) and is documented in gateway.proto and the README.
 */
import type * as grpc from "@grpc/grpc-js";

/** Largest encoded request message; grpc-js answers a larger one RESOURCE_EXHAUSTED before any handler runs. */
export const MAX_REQUEST_BYTES = 1024 * 1024;

/**
 * Largest request metadata (names plus values), checked by the gateway. A header block over 64 KiB as sent
 * (HPACK-compressed) or of more than 128 fields never reaches it: Node's HTTP/2 layer resets such a stream itself,
 * and grpc-js offers no server option to change that.
 */
export const MAX_METADATA_BYTES = 8 * 1024;

/** Options of the gateway's gRPC server. */
export const GATEWAY_SERVER_OPTIONS: grpc.ServerOptions = { "grpc.max_receive_message_length": MAX_REQUEST_BYTES };

/** A text prompt may be this many characters per token of the model's context before it is even tokenized. */
export const MAX_PROMPT_CHARS_PER_TOKEN = 32;
export const MAX_STOP_STRINGS = 16;
export const MAX_STOP_CHARS = 256;
/** Model and drafter names. */
export const MAX_NAME_CHARS = 256;
/** request_id, tenant_id, user_id. */
export const MAX_LABEL_CHARS = 128;
/** Items of one batch (SubmitBatch), and what the batch calls bound. */
export const BATCH_LIMITS = {
  maxItems: 1000,
  defaultCompletionWindowS: 86_400,
  maxCompletionWindowS: 7 * 86_400,
  defaultRetentionS: 7 * 86_400,
  maxRetentionS: 30 * 86_400,
  /** Results in one GetBatchResults answer. */
  defaultResults: 100,
  maxResults: 1000,
  /** Batches in one ListBatches answer. */
  defaultListed: 20,
  maxListed: 100,
  /** Problems an INVALID_ARGUMENT for a batch lists, so that the message stays small whatever the batch. */
  maxProblems: 10,
} as const;
/** Softmax at this temperature is already near uniform for usual logit ranges: more is taken for a mistake. */
export const MAX_TEMPERATURE = 100;
/** Characters of a caller's value quoted back in an error message. */
const QUOTED_CHARS = 64;

/** The metadata's size as the limit counts it: every name plus every value, in bytes. */
export function metadataBytes(metadata: grpc.Metadata): number {
  let bytes = 0;
  for (const [name, values] of Object.entries(metadata.toJSON())) {
    for (const value of values) bytes += Buffer.byteLength(name) + Buffer.byteLength(value);
  }
  return bytes;
}

/** Why the call's metadata is refused, or undefined. */
export function metadataProblem(metadata: grpc.Metadata): string | undefined {
  const bytes = metadataBytes(metadata);
  if (bytes <= MAX_METADATA_BYTES) return undefined;
  return `metadata is ${bytes} bytes; this gateway accepts at most ${MAX_METADATA_BYTES}`;
}

/** A caller's string as an error message quotes it: JSON-quoted and cut short, so that no error grows with input. */
export function quoted(value: string): string {
  return JSON.stringify(value.length > QUOTED_CHARS ? `${value.slice(0, QUOTED_CHARS)}…` : value);
}
