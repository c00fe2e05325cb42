/**
 * What each sequence's replica holds in its target cache, as far as the gateway knows: the replica, the length of the
 * cached prefix and its hash, so that a round's verify job carries only the history after that prefix (target.proto
 * HeldPrefix) and a round's bytes stop growing with the context. The hash is the sequence's, not the replica's: it
 * advances with the history by the tokens each round adds, never rehashing the context.
 *
 * The record is a claim the replica checks: whenever its cache holds something else (evicted, released, restarted,
 * re-routed, a job verified twice after a timeout) it answers history_needed and the round is sent with the full
 * history, so a stale record costs a round trip, never a wrong token.
 */
import type { VerifyJob } from "../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../gen/specgate/v1/VerifyResult.ts";
import { EMPTY_PREFIX, extendPrefix, type PrefixHash, toWire } from "../services/replica-link/held-prefix.ts";

interface Held {
  /** Hash of the sequence's first tokens (at most `length` of them). */
  hashed: PrefixHash;
  /** Replica believed to hold the first `length` tokens; undefined once it answered history_needed. */
  replicaId: string | undefined;
  length: number;
}

export class HeldPrefixes {
  readonly #sequences = new Map<string, Held>();

  /**
   * The job to send `replicaId` for a round whose `job` carries the full history: the history after the prefix the
   * replica holds, with that prefix's length and hash, or `job` itself when no such prefix is known.
   */
  jobFor(sequenceId: string, replicaId: string, job: VerifyJob): VerifyJob {
    const held = this.#sequences.get(sequenceId);
    const history = job.history ?? [];
    if (held === undefined || held.replicaId !== replicaId || held.length >= history.length) return job;
    held.hashed = extendPrefix(held.hashed, history, held.hashed.length, held.length);
    return { ...job, history: history.slice(held.length), held_prefix: toWire(held.hashed) };
  }

  /**
   * `replicaId` verified the round of `job` (full history): its cache now holds that history and the tokens it
   * accepted (draft tokens or tree path), everything of the next round's history but its last token.
   */
  verified(sequenceId: string, replicaId: string, job: VerifyJob, result: VerifyResult__Output): void {
    const history = job.history ?? [];
    const previous = this.#sequences.get(sequenceId)?.hashed ?? EMPTY_PREFIX;
    const base = previous.length <= history.length ? previous : EMPTY_PREFIX;
    this.#sequences.set(sequenceId, {
      hashed: extendPrefix(base, history, base.length, history.length),
      replicaId,
      length: history.length + result.accepted,
    });
  }

  /** The replica answered history_needed: the sequence's next job carries the full history. */
  missed(sequenceId: string): void {
    const held = this.#sequences.get(sequenceId);
    if (held !== undefined) held.replicaId = undefined;
  }

  forget(sequenceId: string): void {
    this.#sequences.delete(sequenceId);
  }
}
