/**
 * The Gateway service's batch calls (gateway.proto: SubmitBatch, GetBatch, GetBatchResults, CancelBatch,
 * ListBatches): each checked (validation.ts), its caller identified as Generate's are (a batch is its submitter's
 * tenant's; another tenant's is NOT_FOUND, so ids of other tenants cannot be probed), then answered from the store
 * (batch-store.ts) and, for SubmitBatch, queued (batch-queue.ts). Redis out of reach is UNAVAILABLE.
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Batch } from "../gen/specgate/v1/Batch.ts";
import type { GatewayHandlers } from "../gen/specgate/v1/Gateway.ts";
import type { ApiKeys } from "./api-keys.ts";
import { identifyCall } from "./authentication.ts";
import type { BatchQueue } from "./batch-queue.ts";
import type { BatchStore } from "./batch-store.ts";
import { BATCH_LIMITS, metadataProblem } from "./request-limits.ts";
import {
  type BatchCall,
  batchCallProblems,
  batchShapeProblems,
  InvalidRequestError,
  type ValidationContext,
  validateBatch,
} from "./validation.ts";

export interface BatchCallsContext {
  readonly apiKeys: ApiKeys | undefined;
  readonly validation: ValidationContext;
  readonly store: BatchStore;
  readonly queue: BatchQueue;
  readonly logger: Logger;
}

type BatchHandlers = Pick<
  GatewayHandlers,
  "SubmitBatch" | "GetBatch" | "GetBatchResults" | "CancelBatch" | "ListBatches"
>;

/** A call's end as a status. */
class CallError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A batch still VALIDATING this long after its creation was stored by a SubmitBatch that ended (its gateway killed)
 * before queuing the items: the next call that reads it queues them (the job ids make a second queuing add nothing).
 */
const STALE_VALIDATING_MS = 10_000;

function notFound(id: string): CallError {
  return new CallError(grpc.status.NOT_FOUND, `no batch ${JSON.stringify(id)} of this tenant`);
}

export function batchHandlers(context: BatchCallsContext): BatchHandlers {
  const { store, queue, logger } = context;

  /** Checks the call, identifies its tenant, answers with `answer(tenant)`; every failure becomes its status. */
  function handle<Request extends BatchCall, Response>(
    call: grpc.ServerUnaryCall<Request, Response>,
    callback: grpc.sendUnaryData<Response>,
    problems: (request: Request) => string[],
    answer: (tenant: string) => Promise<Response>,
  ): void {
    (async () => {
      const found = [metadataProblem(call.metadata) ?? [], ...problems(call.request)].flat();
      if (found.length > 0) throw new InvalidRequestError(found);
      const identity = identifyCall(context.apiKeys, call.metadata, call.request.tenant_id);
      if (!identity.ok) throw new CallError(identity.code, identity.message);
      return await answer(identity.tenant);
    })().then(
      (response) => callback(null, response),
      (error: unknown) => {
        if (error instanceof CallError) callback({ code: error.code, details: error.message });
        else if (error instanceof InvalidRequestError) {
          callback({ code: grpc.status.INVALID_ARGUMENT, details: error.message });
        } else {
          logger.warn({ err: error }, "batch call failed");
          callback({ code: grpc.status.UNAVAILABLE, details: `the batch store is unavailable: ${String(error)}` });
        }
      },
    );
  }

  /** The batch, queued now if its SubmitBatch died between storing it and queuing its items. */
  const resumed = async (batch: Batch): Promise<Batch> => {
    if (batch.status !== "BATCH_STATUS_VALIDATING" || Date.now() - Number(batch.created_at_ms) < STALE_VALIDATING_MS) {
      return batch;
    }
    await queue.add(batch);
    await store.queued(batch.id as string);
    logger.info({ batchId: batch.id }, "batch queued again: its submission ended before queuing it");
    return (await store.get(batch.id as string)) ?? batch;
  };

  const owned = async (id: string, tenant: string): Promise<Batch> => {
    const batch = await store.get(id, tenant);
    if (batch === undefined) throw notFound(id);
    return resumed(batch);
  };

  return {
    SubmitBatch(call, callback) {
      handle(call, callback, batchShapeProblems, async (tenant) => {
        const valid = validateBatch(call.request, tenant, context.validation);
        const batch = await store.create(tenant, valid);
        await queue.add(batch);
        await store.queued(batch.id as string);
        logger.info({ batchId: batch.id, tenant, items: valid.items.length }, "batch submitted");
        return owned(batch.id as string, tenant);
      });
    },
    GetBatch(call, callback) {
      handle(
        call,
        callback,
        (request) => batchCallProblems(request, "GetBatchRequest"),
        (tenant) => owned(call.request.batch_id, tenant),
      );
    },
    GetBatchResults(call, callback) {
      handle(
        call,
        callback,
        (request) => batchCallProblems(request, "GetBatchResultsRequest"),
        async (tenant) => {
          const batch = await owned(call.request.batch_id, tenant);
          const total = batch.counts?.total ?? 0;
          const { offset } = call.request;
          const end = Math.min(total, offset + (call.request.limit || BATCH_LIMITS.defaultResults));
          const results = await store.results(batch.id as string, offset, Math.max(0, end - offset));
          return { batch, results, next_offset: end < total ? end : 0 };
        },
      );
    },
    CancelBatch(call, callback) {
      handle(
        call,
        callback,
        (request) => batchCallProblems(request, "CancelBatchRequest"),
        async (tenant) => {
          const batch = await store.cancel(call.request.batch_id, tenant);
          if (batch === undefined) throw notFound(call.request.batch_id);
          logger.info({ batchId: batch.id, tenant, status: batch.status }, "batch cancel");
          return batch;
        },
      );
    },
    ListBatches(call, callback) {
      handle(
        call,
        callback,
        (request) => batchCallProblems(request, "ListBatchesRequest"),
        async (tenant) => {
          const listed = await store.list(
            tenant,
            call.request.offset,
            call.request.limit || BATCH_LIMITS.defaultListed,
          );
          return { batches: await Promise.all(listed.map(resumed)) };
        },
      );
    },
  };
}
