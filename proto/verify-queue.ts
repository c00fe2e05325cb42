/**
 * The queue half of the target contract (target.proto): where verify jobs go, how they are carried in BullMQ, and
 * how replicas announce themselves in Redis. The gateway (producer) and the target service (consumer) both use this
 * module, so names and encodings cannot drift apart.
 *
 * - Each replica consumes its own queue `verify-{<replicaId>}` under the BullMQ prefix `specgate`: a sequence's jobs
 *   go to the replica holding its cache (affinity); any replica can still serve a job with the full history (it
 *   re-prefills from it).
 * - Job data is `{ verifyJob: base64(VerifyJob) }` under the job name `verify`; the job's return value is
 *   base64(VerifyResult). Base64 because BullMQ stores job data and results as JSON.
 * - Pub/sub shortcuts beside the queue (target.proto explains them): the gateway publishes each job, raw VerifyJob
 *   bytes, on `specgate:verify-push:{<replicaId>}`; the replica publishes raw VerifyReply bytes on the job's
 *   `reply_channel`, which each gateway names `specgate:verify-reply:{<replicaId>}:<clientId>` per replica, and raw
 *   DraftVerdict bytes on the job's `draft_verdict_channel`, which each draft service names
 *   `specgate:draft-verdict:{<draftId>}`.
 * - A replica keeps the Redis key `specgate:replica:{<replicaId>}` = base64(ReplicaAnnouncement) alive with expiry
 *   REPLICA_TTL_MS, refreshed every REPLICA_HEARTBEAT_MS; a missing key means the replica is gone.
 *
 * The braces are Redis Cluster hash tags: only the text inside them picks a key's or channel's slot. Everything of
 * one replica (its queue's keys, push channel, announcement, and the reply channels its answers go to) carries the
 * replica id as its tag, so a round's push, reply and any queued copy stay on the one shard that owns that replica:
 * no round crosses shards, and replicas spread over the shards. (A draft service's verdict channel, which every
 * replica publishes to, carries the draft service's id.) BullMQ needs every key of a queue in one slot (its
 * scripts touch several at once), which the tag in the queue name gives. The names start with `specgate` all the
 * same, so that one ACL pattern (`~specgate*`, `&specgate*`) covers them.
 */
import type { DraftVerdict, DraftVerdict__Output } from "../gen/specgate/v1/DraftVerdict.ts";
import type { ReplicaAnnouncement, ReplicaAnnouncement__Output } from "../gen/specgate/v1/ReplicaAnnouncement.ts";
import type { VerifyJob, VerifyJob__Output } from "../gen/specgate/v1/VerifyJob.ts";
import type { VerifyReply, VerifyReply__Output } from "../gen/specgate/v1/VerifyReply.ts";
import type { VerifyResult, VerifyResult__Output } from "../gen/specgate/v1/VerifyResult.ts";
import { messageCodec } from "./codec.ts";

/** BullMQ `prefix` option for every specgate queue. */
export const QUEUE_PREFIX = "specgate";

/** BullMQ job name of verify jobs. */
export const VERIFY_JOB_NAME = "verify";
export const REPLICA_HEARTBEAT_MS = 1000;
export const REPLICA_TTL_MS = 3000;
/** Pattern matching every replica announcement key (for SCAN). */
export const REPLICA_KEY_PATTERN = `${QUEUE_PREFIX}:replica:*`;

/** The BullMQ job data of a verify job. */
export interface VerifyJobData {
  verifyJob: string;
}

export function verifyQueueName(replicaId: string): string {
  return `verify-{${replicaId}}`;
}

export function replicaKey(replicaId: string): string {
  return `${QUEUE_PREFIX}:replica:{${replicaId}}`;
}

export function verifyPushChannel(replicaId: string): string {
  return `${QUEUE_PREFIX}:verify-push:{${replicaId}}`;
}

/** Where the replica answers one gateway's jobs (clientId names the gateway's verify client). */
export function verifyReplyChannel(replicaId: string, clientId: string): string {
  return `${QUEUE_PREFIX}:verify-reply:{${replicaId}}:${clientId}`;
}

export function draftVerdictChannel(draftId: string): string {
  return `${QUEUE_PREFIX}:draft-verdict:{${draftId}}`;
}

const verifyJobCodec = messageCodec<VerifyJob, VerifyJob__Output>("VerifyJob");
const verifyResultCodec = messageCodec<VerifyResult, VerifyResult__Output>("VerifyResult");
const verifyReplyCodec = messageCodec<VerifyReply, VerifyReply__Output>("VerifyReply");
const draftVerdictCodec = messageCodec<DraftVerdict, DraftVerdict__Output>("DraftVerdict");
const announcementCodec = messageCodec<ReplicaAnnouncement, ReplicaAnnouncement__Output>("ReplicaAnnouncement");

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function toBase64(bytes: Uint8Array): string {
  return toBuffer(bytes).toString("base64");
}

function fromBase64(text: string): Uint8Array {
  return Buffer.from(text, "base64");
}

export function encodeVerifyJob(job: VerifyJob): VerifyJobData {
  return verifyJobData(encodeVerifyPush(job));
}

/** The job data of a job already encoded for its push: one encoding serves both copies. */
export function verifyJobData(pushed: Buffer): VerifyJobData {
  return { verifyJob: pushed.toString("base64") };
}

export function decodeVerifyJob(data: VerifyJobData): VerifyJob__Output {
  return verifyJobCodec.decode(fromBase64(data.verifyJob));
}

export function encodeVerifyPush(job: VerifyJob): Buffer {
  return toBuffer(verifyJobCodec.encode(job));
}

export function decodeVerifyPush(message: Buffer): VerifyJob__Output {
  return verifyJobCodec.decode(message);
}

export function encodeVerifyReply(reply: VerifyReply): Buffer {
  return toBuffer(verifyReplyCodec.encode(reply));
}

export function decodeVerifyReply(message: Buffer): VerifyReply__Output {
  return verifyReplyCodec.decode(message);
}

export function encodeDraftVerdict(verdict: DraftVerdict): Buffer {
  return toBuffer(draftVerdictCodec.encode(verdict));
}

export function decodeDraftVerdict(message: Buffer): DraftVerdict__Output {
  return draftVerdictCodec.decode(message);
}

/** The value a target replica returns from its BullMQ processor. */
export function encodeVerifyResult(result: VerifyResult): string {
  return toBase64(verifyResultCodec.encode(result));
}

export function decodeVerifyResult(returnValue: string): VerifyResult__Output {
  return verifyResultCodec.decode(fromBase64(returnValue));
}

export function encodeReplicaAnnouncement(announcement: ReplicaAnnouncement): string {
  return toBase64(announcementCodec.encode(announcement));
}

export function decodeReplicaAnnouncement(value: string): ReplicaAnnouncement__Output {
  return announcementCodec.decode(fromBase64(value));
}
