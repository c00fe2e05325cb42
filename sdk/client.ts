/**
 * SpecgateClient: the typed client of the Gateway service. Deadlines (one overall deadline across retries),
 * cancellation by AbortSignal, retries with backoff on UNAVAILABLE (never once a stream has yielded: tokens already
 * delivered cannot be taken back), TLS or plaintext for loopback, an API key on every call, and failures as
 * SpecgateError with the gRPC code.
 */
import {
  type ChannelCredentials,
  type ChannelOptions,
  type ClientUnaryCall,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { GatewayClient } from "./contract.ts";
import { SpecgateError, toSpecgateError } from "./errors.ts";
import type { Batch__Output } from "./gen/specgate/v1/Batch.ts";
import type { GatewayClient as GatewayStub } from "./gen/specgate/v1/Gateway.ts";
import type { GenerateEnd__Output } from "./gen/specgate/v1/GenerateEnd.ts";
import type { GenerateResponse__Output } from "./gen/specgate/v1/GenerateResponse.ts";
import type { GetBatchResultsResponse__Output } from "./gen/specgate/v1/GetBatchResultsResponse.ts";
import type { ListBatchesResponse__Output } from "./gen/specgate/v1/ListBatchesResponse.ts";
import type { ListModelsResponse__Output } from "./gen/specgate/v1/ListModelsResponse.ts";
import type { TokenDelta__Output } from "./gen/specgate/v1/TokenDelta.ts";
import { isLoopbackHost } from "./loopback.ts";
import { type BatchItemInput, type GenerateInput, toBatchItem, toGenerateRequest } from "./request.ts";
import { backoffDelayMs, DEFAULT_RETRY, type RetryOptions, sleep } from "./retry.ts";

export interface TlsOptions {
  /** PEM root certificate(s) to trust; absent: the system's roots. */
  ca?: Buffer | string;
  /** PEM client certificate and key, for mutual TLS. */
  cert?: Buffer | string;
  key?: Buffer | string;
}

export interface ClientOptions {
  /** host:port of a gateway. Default 127.0.0.1:50051. */
  address?: string;
  /** TLS settings, or false for plaintext. Absent: plaintext for loopback addresses, TLS with system roots otherwise. */
  tls?: TlsOptions | false;
  /** API key of a gateway that requires one: sent as `authorization: Bearer <key>` with every call. */
  apiKey?: string;
  /** Retries on UNAVAILABLE; `{ maxAttempts: 1 }` disables them. */
  retry?: Partial<RetryOptions>;
  /** Default deadline of every call, milliseconds from its start (absent: none). */
  timeoutMs?: number;
  /** Extra grpc-js channel options. */
  channelOptions?: ChannelOptions;
}

export interface CallOptions {
  /** Deadline for this call, milliseconds from now, covering all retries. Overrides the client's default. */
  timeoutMs?: number;
  /** Aborting cancels the call (the gateway stops the request and releases its caches): CANCELLED. */
  signal?: AbortSignal;
  /** Extra request metadata (e.g. a traceparent). */
  metadata?: Record<string, string>;
}

/** Options of the batch calls: who asks (the tenant, as in GenerateInput), and the call's own options. */
export interface BatchCallOptions extends CallOptions {
  tenant_id?: string;
}

export interface SubmitBatchOptions extends BatchCallOptions {
  /** Seconds the batch may take before its items not yet run expire (gateway default: 24 h). */
  completion_window_s?: number;
  /** Seconds the batch and its results are kept (gateway default: 7 days). */
  retention_s?: number;
}

/** A range of items or batches: from `offset`, at most `limit` (gateway default when absent). */
export interface PageOptions extends BatchCallOptions {
  offset?: number;
  limit?: number;
}

export type StreamEvent = ({ type: "delta" } & TokenDelta__Output) | ({ type: "end" } & GenerateEnd__Output);

export const DEFAULT_ADDRESS = "127.0.0.1:50051";

function channelCredentials(address: string, tls: TlsOptions | false | undefined): ChannelCredentials {
  if (tls === false || (tls === undefined && isLoopbackHost(address.replace(/:\d+$/, ""))))
    return credentials.createInsecure();
  const pem = (value: Buffer | string | undefined) => (value === undefined ? null : Buffer.from(value));
  return credentials.createSsl(pem(tls?.ca), pem(tls?.key), pem(tls?.cert));
}

function cancelledError(signal: AbortSignal): SpecgateError {
  const reason = signal.reason instanceof Error ? signal.reason.message : String(signal.reason ?? "aborted");
  return new SpecgateError(status.CANCELLED, `cancelled by the caller (${reason})`);
}

export class SpecgateClient {
  readonly address: string;
  private readonly stub: GatewayStub;
  private readonly retry: RetryOptions;
  private readonly timeoutMs: number | undefined;
  private readonly apiKey: string | undefined;

  constructor(options: ClientOptions = {}) {
    this.address = options.address ?? DEFAULT_ADDRESS;
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.timeoutMs = options.timeoutMs;
    this.apiKey = options.apiKey;
    this.stub = new GatewayClient(this.address, channelCredentials(this.address, options.tls), options.channelOptions);
  }

  /** Generates a whole completion: tokens, text, finish reason and speculation statistics. */
  generate(input: GenerateInput, options: CallOptions = {}): Promise<GenerateResponse__Output> {
    const request = toGenerateRequest(input);
    return this.unary(options, (metadata, deadline, callback) =>
      this.stub.Generate(request, metadata, { deadline }, callback),
    );
  }

  /**
   * Submits a batch of generations, run asynchronously by the gateways at a lower priority than interactive calls.
   * Never retried: a submission that failed in flight may have been stored, and `listBatches` tells.
   */
  submitBatch(items: readonly BatchItemInput[], options: SubmitBatchOptions = {}): Promise<Batch__Output> {
    const request = {
      items: items.map(toBatchItem),
      tenant_id: options.tenant_id ?? "",
      completion_window_s: options.completion_window_s ?? 0,
      retention_s: options.retention_s ?? 0,
    };
    return this.unary(
      options,
      (metadata, deadline, callback) => this.stub.SubmitBatch(request, metadata, { deadline }, callback),
      false,
    );
  }

  /** A batch's status and counts. */
  getBatch(batchId: string, options: BatchCallOptions = {}): Promise<Batch__Output> {
    const request = { batch_id: batchId, tenant_id: options.tenant_id ?? "" };
    return this.unary(options, (metadata, deadline, callback) =>
      this.stub.GetBatch(request, metadata, { deadline }, callback),
    );
  }

  /** Results of the batch's items from `offset` (those still pending are left out); `next_offset` 0 at the end. */
  getBatchResults(batchId: string, options: PageOptions = {}): Promise<GetBatchResultsResponse__Output> {
    const request = {
      batch_id: batchId,
      tenant_id: options.tenant_id ?? "",
      offset: options.offset ?? 0,
      limit: options.limit ?? 0,
    };
    return this.unary(options, (metadata, deadline, callback) =>
      this.stub.GetBatchResults(request, metadata, { deadline }, callback),
    );
  }

  /** Cancels a batch: items not started are not run. */
  cancelBatch(batchId: string, options: BatchCallOptions = {}): Promise<Batch__Output> {
    const request = { batch_id: batchId, tenant_id: options.tenant_id ?? "" };
    return this.unary(options, (metadata, deadline, callback) =>
      this.stub.CancelBatch(request, metadata, { deadline }, callback),
    );
  }

  /** The tenant's batches, newest first. */
  listBatches(options: PageOptions = {}): Promise<ListBatchesResponse__Output> {
    const request = { tenant_id: options.tenant_id ?? "", offset: options.offset ?? 0, limit: options.limit ?? 0 };
    return this.unary(options, (metadata, deadline, callback) =>
      this.stub.ListBatches(request, metadata, { deadline }, callback),
    );
  }

  /** The target model and the drafters the gateway serves. */
  listModels(options: CallOptions = {}): Promise<ListModelsResponse__Output> {
    return this.unary(options, (metadata, deadline, callback) =>
      this.stub.ListModels({}, metadata, { deadline }, callback),
    );
  }

  /**
   * Streams a completion: `delta` events as tokens are accepted, then one `end` event with the finish reason and
   * statistics. Breaking out of the loop cancels the request.
   */
  async *stream(input: GenerateInput, options: CallOptions = {}): AsyncGenerator<StreamEvent, void, undefined> {
    const request = toGenerateRequest(input);
    const deadline = this.deadline(options);
    const { signal } = options;
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted) throw cancelledError(signal);
      const call = this.stub.GenerateStream(request, this.metadata(options), { deadline });
      const onAbort = () => call.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
      let yielded = false;
      try {
        for await (const message of call) {
          // Messages already received when the caller aborted are dropped: an aborted stream ends in CANCELLED.
          if (signal?.aborted) throw cancelledError(signal);
          yielded = true;
          if (message.delta) yield { type: "delta", ...message.delta };
          else if (message.end) yield { type: "end", ...message.end };
        }
        if (signal?.aborted) throw cancelledError(signal);
        return;
      } catch (error) {
        if (signal?.aborted) throw cancelledError(signal);
        const failure = toSpecgateError(error);
        if (yielded || !(await this.mayRetry(failure, attempt, deadline, signal))) throw failure;
      } finally {
        signal?.removeEventListener("abort", onAbort);
        call.cancel();
      }
    }
  }

  /** Resolves once the channel is connected, or rejects (UNAVAILABLE) after timeoutMs. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.stub.waitForReady(Date.now() + timeoutMs, (error) => {
        if (error) reject(new SpecgateError(status.UNAVAILABLE, `gateway ${this.address} not ready: ${error.message}`));
        else resolve();
      });
    });
  }

  close(): void {
    this.stub.close();
  }

  private deadline(options: CallOptions): Date | number {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    return timeoutMs === undefined ? Number.POSITIVE_INFINITY : new Date(Date.now() + timeoutMs);
  }

  private metadata(options: CallOptions): Metadata {
    const metadata = new Metadata();
    if (this.apiKey !== undefined) metadata.set("authorization", `Bearer ${this.apiKey}`);
    for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value);
    return metadata;
  }

  /** After a failed attempt: waits the backoff and returns true when another attempt is allowed. */
  private async mayRetry(
    failure: SpecgateError,
    attempt: number,
    deadline: Date | number,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    if (failure.code !== status.UNAVAILABLE || attempt >= this.retry.maxAttempts) return false;
    const delay = backoffDelayMs(this.retry, attempt);
    if (Date.now() + delay >= +deadline) return false;
    try {
      await sleep(delay, signal);
    } catch {
      throw cancelledError(signal as AbortSignal);
    }
    return true;
  }

  private async unary<T>(
    options: CallOptions,
    invoke: (
      metadata: Metadata,
      deadline: Date | number,
      callback: (error: ServiceError | null, value?: T) => void,
    ) => ClientUnaryCall,
    retried = true,
  ): Promise<T> {
    const deadline = this.deadline(options);
    const { signal } = options;
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted) throw cancelledError(signal);
      try {
        return await new Promise<T>((resolve, reject) => {
          const call = invoke(this.metadata(options), deadline, (error, value) => {
            signal?.removeEventListener("abort", onAbort);
            if (error) reject(error);
            else resolve(value as T);
          });
          const onAbort = () => call.cancel();
          signal?.addEventListener("abort", onAbort, { once: true });
        });
      } catch (error) {
        if (signal?.aborted) throw cancelledError(signal);
        const failure = toSpecgateError(error);
        if (!(retried && (await this.mayRetry(failure, attempt, deadline, signal)))) throw failure;
      }
    }
  }
}
