/**
 * Bytes of one round's verify job at a given context, before and after held prefixes: the job as the gateway builds it
 * (full history) and as it sends it once the replica holds the sequence's prefix (the history after that prefix, here
 * the target's last token, with the prefix's length and hash), each as its pushed copy and its queued copy (base64
 * job data). Synthetic histories of pseudo-random token ids from a 32000-token vocabulary (the same every run, so are
 * the byte counts); K = 4 draft tokens, greedy.
 *
 *   node --import tsx bench/job-bytes.ts [--contexts 128,2048,32768]
 */
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { HeldPrefixes } from "../gateway/held-prefixes.ts";
import type { VerifyJob } from "../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../gen/specgate/v1/VerifyResult.ts";
import { draftVerdictChannel, encodeVerifyJob, encodeVerifyPush, verifyReplyChannel } from "../proto/verify-queue.ts";

const VOCAB = 32000;
const K = 4;

const { values } = parseArgs({ options: { contexts: { type: "string", default: "128,2048,32768" } } });
const contexts = values.contexts.split(",").map(Number);

/** Token `i` of a synthetic sequence: ids spread over the vocabulary as a tokenizer's are, varints of 1 to 3 bytes. */
const token = (i: number) => (Math.imul(i + 1, 2654435761) >>> 0) % VOCAB;

function roundJob(history: number[], round: number): VerifyJob {
  return {
    sequence_id: randomUUID(),
    request_id: randomUUID(),
    round,
    history,
    draft_tokens: Array.from({ length: K }, (_, i) => token(history.length + i)),
    sampling: { temperature: 0, seed: 12345 },
    trace_context: { traceparent: `00-${"a".repeat(32)}-${"b".repeat(16)}-01` },
    enqueued_at_unix_ms: Date.now() + 0.123,
    deadline_unix_ms: Date.now() + 60_000,
    model: "stories260k-x110m",
    job_id: randomUUID(),
    reply_channel: verifyReplyChannel("0", randomUUID()),
    draft_verdict_channel: draftVerdictChannel(randomUUID()),
  };
}

const sizes = (job: VerifyJob) => ({
  push: encodeVerifyPush(job).length,
  queued: Buffer.byteLength(JSON.stringify(encodeVerifyJob(job))),
});

console.log("| history tokens | full job: push / queued bytes | held prefix: push / queued bytes | push ratio |");
console.log("|---:|---:|---:|---:|");
for (const context of contexts) {
  const history = Array.from({ length: context }, (_, i) => token(i));
  // The previous round verified history minus its last 3 tokens and accepted 2: the replica holds all but the last.
  const previous = roundJob(history.slice(0, context - 3), 7);
  const job = { ...roundJob(history, 8), sequence_id: previous.sequence_id };
  const held = new HeldPrefixes();
  held.verified(previous.sequence_id as string, "r0", previous, { accepted: 2 } as VerifyResult__Output);
  const delta = held.jobFor(previous.sequence_id as string, "r0", job);
  if (delta.history?.length !== 1) throw new Error("expected a one-token delta");
  const before = sizes(job);
  const after = sizes(delta);
  console.log(
    `| ${context} | ${before.push} / ${before.queued} | ${after.push} / ${after.queued} | ${(before.push / after.push).toFixed(1)}× |`,
  );
}
