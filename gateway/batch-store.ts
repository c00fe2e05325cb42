/**
 * Batches as Redis keeps them, under the BullMQ prefix of every specgate key:
 * - `specgate:batch:<id>`: a hash, the batch's record (tenant, status, counts, times);
 * - `specgate:batch:<id>:items`: index → BatchItem bytes (custom id and request, the tenant set);
 * - `specgate:batch:<id>:results`: index → BatchItemResult bytes, written once per index;
 * - `specgate:batches:<tenant>`: a sorted set of the tenant's batch ids by creation time.
 * Every key expires at the batch's `expires_at_ms`, fetched or not. A result is written by one script that sets it only
 * if the index has none and counts it in the same step, so an item run twice (its gateway killed after the write but
 * before BullMQ heard of it) still has one result and is counted once; the last result ends the batch's status.
 */
import { randomUUID } from "node:crypto";
import type { Batch } from "../gen/specgate/v1/Batch.ts";
import type { BatchItem, BatchItem__Output } from "../gen/specgate/v1/BatchItem.ts";
import type { BatchItemResult, BatchItemResult__Output } from "../gen/specgate/v1/BatchItemResult.ts";
import type { BatchStatus } from "../gen/specgate/v1/BatchStatus.ts";
import { messageCodec } from "../proto/codec.ts";
import { QUEUE_PREFIX } from "../proto/verify-queue.ts";
import type { RedisClient } from "../services/replica-link/redis-target.ts";
import type { ValidBatch } from "./validation.ts";

/** What an item's result counts as. */
export type ItemOutcome = "completed" | "failed" | "expired";

type StatusName = Exclude<BatchStatus, number>;

const itemCodec = messageCodec<BatchItem, BatchItem__Output>("BatchItem");
const resultCodec = messageCodec<BatchItemResult, BatchItemResult__Output>("BatchItemResult");

/** The batch id is the hash tag: on a Redis Cluster a batch's keys share a slot, as its scripts and MULTI need. */
const recordKey = (id: string) => `${QUEUE_PREFIX}:batch:{${id}}`;
const itemsKey = (id: string) => `${recordKey(id)}:items`;
const resultsKey = (id: string) => `${recordKey(id)}:results`;
const tenantKey = (tenant: string) => `${QUEUE_PREFIX}:batches:${tenant}`;

const OPEN: readonly StatusName[] = ["BATCH_STATUS_VALIDATING", "BATCH_STATUS_IN_PROGRESS"];

/**
 * KEYS: record, results. ARGV: index, result bytes, outcome, now. Returns 1 when written, 0 when the index already had
 * a result, -1 when the batch is gone (expired).
 */
const WRITE_RESULT = `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('PEXPIREAT', KEYS[2], redis.call('HGET', KEYS[1], 'expires_at_ms'))
if ARGV[3] == 'completed' then
  redis.call('HINCRBY', KEYS[1], 'completed', 1)
else
  redis.call('HINCRBY', KEYS[1], 'failed', 1)
  if ARGV[3] == 'expired' then redis.call('HINCRBY', KEYS[1], 'expired', 1) end
end
local counts = redis.call('HMGET', KEYS[1], 'total', 'completed', 'failed', 'expired', 'status')
local total, completed, failed, expired = tonumber(counts[1]), tonumber(counts[2]), tonumber(counts[3]), tonumber(counts[4])
if completed + failed == total and (counts[5] == '${OPEN[0]}' or counts[5] == '${OPEN[1]}') then
  local status = 'BATCH_STATUS_COMPLETED'
  if expired > 0 then status = 'BATCH_STATUS_EXPIRED' elseif completed == 0 then status = 'BATCH_STATUS_FAILED' end
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at_ms', ARGV[4])
end
return 1
`;

/** KEYS: record. VALIDATING → IN_PROGRESS (any other status stays). */
const QUEUED = `
if redis.call('HGET', KEYS[1], 'status') == '${OPEN[0]}' then redis.call('HSET', KEYS[1], 'status', '${OPEN[1]}') end
return 1
`;

/** KEYS: record. ARGV: now. An open batch → CANCELLED (any other status stays). */
const CANCEL = `
local status = redis.call('HGET', KEYS[1], 'status')
if status == '${OPEN[0]}' or status == '${OPEN[1]}' then
  redis.call('HSET', KEYS[1], 'status', 'BATCH_STATUS_CANCELLED', 'finished_at_ms', ARGV[1])
end
return 1
`;

export class BatchStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly now: () => number = Date.now,
  ) {}

  /** Stores a new batch, VALIDATING until its items are queued (`queued`). */
  async create(tenant: string, valid: ValidBatch): Promise<Batch> {
    const id = `batch_${randomUUID().replaceAll("-", "")}`;
    const created = this.now();
    const expires = created + valid.retentionS * 1000;
    const record = {
      tenant_id: tenant,
      status: "BATCH_STATUS_VALIDATING",
      total: valid.items.length,
      completed: 0,
      failed: 0,
      expired: 0,
      created_at_ms: created,
      deadline_ms: created + valid.completionWindowS * 1000,
      finished_at_ms: 0,
      expires_at_ms: expires,
    };
    const items = valid.items.map(({ customId, request }) =>
      Buffer.from(itemCodec.encode({ custom_id: customId, request })),
    );
    await this.redis
      .multi()
      .hset(recordKey(id), record)
      .hset(itemsKey(id), Object.fromEntries(items.map((bytes, index) => [index, bytes])))
      .pexpireat(recordKey(id), expires)
      .pexpireat(itemsKey(id), expires)
      .exec();
    // Another slot on a cluster, so not in the MULTI: a batch missing from its tenant's list is only unlisted.
    await this.redis.zadd(tenantKey(tenant), created, id);
    return toBatch(id, Object.fromEntries(Object.entries(record).map(([k, v]) => [k, String(v)])));
  }

  /** The batch's items are all queued: IN_PROGRESS, unless it was cancelled meanwhile. */
  async queued(id: string): Promise<void> {
    await this.redis.eval(QUEUED, 1, recordKey(id));
  }

  /** The batch, if it exists and belongs to `tenant` (undefined: any tenant). */
  async get(id: string, tenant?: string): Promise<Batch | undefined> {
    const fields = await this.redis.hgetall(recordKey(id));
    if (fields.status === undefined) return undefined;
    if (tenant !== undefined && fields.tenant_id !== tenant) return undefined;
    return toBatch(id, fields);
  }

  async item(id: string, index: number): Promise<BatchItem__Output | undefined> {
    const bytes = await this.redis.hgetBuffer(itemsKey(id), String(index));
    return bytes === null ? undefined : itemCodec.decode(bytes);
  }

  async hasResult(id: string, index: number): Promise<boolean> {
    return (await this.redis.hexists(resultsKey(id), String(index))) === 1;
  }

  /** Writes the item's result unless it has one; true when this call wrote it. */
  async writeResult(id: string, result: BatchItemResult, outcome: ItemOutcome): Promise<boolean> {
    const bytes = Buffer.from(resultCodec.encode(result));
    const written = await this.redis.eval(
      WRITE_RESULT,
      2,
      recordKey(id),
      resultsKey(id),
      String(result.index),
      bytes,
      outcome,
      this.now(),
    );
    return written === 1;
  }

  /** The results of items [offset, offset + limit) that have one, in index order. */
  async results(id: string, offset: number, limit: number): Promise<BatchItemResult__Output[]> {
    if (limit === 0) return [];
    const indexes = Array.from({ length: limit }, (_, i) => String(offset + i));
    const values = await this.redis.hmgetBuffer(resultsKey(id), ...indexes);
    return values.flatMap((bytes) => (bytes === null ? [] : [resultCodec.decode(bytes)]));
  }

  /** Cancels an open batch of `tenant`; the batch as it is then (undefined: no such batch of the tenant's). */
  async cancel(id: string, tenant: string): Promise<Batch | undefined> {
    const batch = await this.get(id, tenant);
    if (batch === undefined) return undefined;
    await this.redis.eval(CANCEL, 1, recordKey(id), this.now());
    return this.get(id, tenant);
  }

  /** The tenant's batches, newest first; ids whose batch has expired are dropped from its set on the way. */
  async list(tenant: string, offset: number, limit: number): Promise<Batch[]> {
    const key = tenantKey(tenant);
    const ids = await this.redis.zrevrange(key, offset, offset + limit - 1);
    const batches = await Promise.all(ids.map((id) => this.get(id, tenant)));
    const gone = ids.filter((_, i) => batches[i] === undefined);
    if (gone.length > 0) await this.redis.zrem(key, ...gone);
    return batches.filter((batch) => batch !== undefined);
  }
}

function toBatch(id: string, fields: Record<string, string>): Batch {
  const number = (name: string) => Number(fields[name] ?? 0);
  return {
    id,
    status: fields.status as StatusName,
    counts: { total: number("total"), completed: number("completed"), failed: number("failed") },
    tenant_id: fields.tenant_id ?? "",
    created_at_ms: number("created_at_ms"),
    deadline_ms: number("deadline_ms"),
    finished_at_ms: number("finished_at_ms"),
    expires_at_ms: number("expires_at_ms"),
  };
}
