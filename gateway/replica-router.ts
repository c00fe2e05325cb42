/**
 * Routing of verify rounds to target replicas. A sequence sticks to the replica that holds its cache (affinity); a
 * new sequence goes to the live replica with the fewest sequences. When a replica dies (its announcement expires),
 * fails a round with UNAVAILABLE, or does not answer within `verifyTimeoutMs`, the round is re-sent to another
 * replica; the job sent there carries the full history, so the new replica re-prefills and the result is the same.
 * Otherwise a job carries only the history after the prefix its replica holds (held-prefixes.ts); a replica that
 * answers history_needed gets the round again with the full history. A replica
 * that announces itself again after it was lost (restarted, or its announcement went with Redis's data) counts as a
 * new one. A round that timed out with no other replica to take it is re-sent once to the same one, still announced:
 * Redis may have lost the job (a restart without persistence) while the replica is fine.
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { ReplicaAnnouncement__Output } from "../gen/specgate/v1/ReplicaAnnouncement.ts";
import type { TargetClient as TargetStub } from "../gen/specgate/v1/Target.ts";
import type { VerifyJob } from "../gen/specgate/v1/VerifyJob.ts";
import type { VerifyResult__Output } from "../gen/specgate/v1/VerifyResult.ts";
import { TargetClient } from "../proto/load.ts";
import { abortable } from "../services/replica-link/abortable.ts";
import { type ReplicaWatch, watchReplicas } from "../services/replica-link/announcements.ts";
import type { RedisClient } from "../services/replica-link/redis-target.ts";
import type { VerifyClient } from "../services/replica-link/verify-client.ts";
import { VerifyJobError } from "../services/replica-link/verify-errors.ts";
import type { SpecgateMetrics } from "../services/telemetry/index.ts";
import { HeldPrefixes } from "./held-prefixes.ts";

/** No replica could verify the round (none announced, or all failed it). Answered as UNAVAILABLE. */
export class NoReplicaError extends Error {
  override readonly name = "NoReplicaError";
}

interface Replica {
  readonly announcement: ReplicaAnnouncement__Output;
  readonly target: TargetStub;
  /** Sequences routed here. */
  sequences: number;
}

export interface ReplicaRouterOptions {
  readonly redis: RedisClient;
  readonly verifyClient: VerifyClient;
  /** Target model every replica must serve. */
  readonly model: string;
  readonly verifyTimeoutMs: number;
  readonly logger: Logger;
  readonly metrics?: SpecgateMetrics;
}

export class ReplicaRouter {
  readonly #replicas = new Map<string, Replica>();
  readonly #affinity = new Map<string, string>();
  readonly #held = new HeldPrefixes();
  /** Per sequence, its last verify job's settlement. */
  readonly #settling = new Map<string, Promise<void>>();
  readonly #watch: ReplicaWatch;
  readonly #options: ReplicaRouterOptions;
  #firstPoll: Promise<void>;

  constructor(options: ReplicaRouterOptions) {
    this.#options = options;
    let polled: () => void = () => undefined;
    this.#firstPoll = new Promise((resolve) => {
      polled = resolve;
    });
    this.#watch = watchReplicas(options.redis, {
      joined: (announcement) => {
        polled();
        if (announcement.model !== options.model) {
          options.logger.warn(
            { replica: announcement.replica_id, model: announcement.model },
            "replica serves another model; ignored",
          );
          return;
        }
        options.logger.info(
          { replica: announcement.replica_id, address: announcement.address },
          "target replica joined",
        );
        const target = new TargetClient(announcement.address, grpc.credentials.createInsecure());
        this.#replicas.set(announcement.replica_id, { announcement, target, sequences: 0 });
      },
      lost: (replicaId) => this.#lose(replicaId, "its announcement expired"),
      error: (error) => options.logger.warn({ err: error }, "listing target replicas failed"),
    });
    // The first poll reports only replicas that exist; resolve soon after it whether or not any did.
    setTimeout(() => polled(), 250).unref();
  }

  /** Live replicas by id, with the sequences routed to each. */
  get replicas(): ReadonlyMap<string, { readonly sequences: number; readonly address: string }> {
    return new Map(
      [...this.#replicas].map(([id, r]) => [id, { sequences: r.sequences, address: r.announcement.address }]),
    );
  }

  /** Resolves once the first listing of replicas is known (start-up). */
  ready(): Promise<void> {
    return this.#firstPoll;
  }

  /**
   * Verifies one round of the sequence on its replica, moving it to another replica when that one fails or is gone.
   * Resolves with the result and the replica that produced it.
   */
  async verify(
    sequenceId: string,
    job: VerifyJob,
    signal: AbortSignal,
  ): Promise<{ result: VerifyResult__Output; replicaId: string }> {
    const failed = new Set<Replica>();
    let resentAfterTimeout = false;
    let lastFailure: string | undefined;
    for (;;) {
      signal.throwIfAborted();
      const [replicaId, replica] = await this.#routeOrWait(sequenceId, failed, signal).catch((error) => {
        throw error instanceof NoReplicaError && lastFailure
          ? new NoReplicaError(`${error.message} (${lastFailure})`)
          : error;
      });
      const timeout = AbortSignal.timeout(this.#options.verifyTimeoutMs);
      // The request's own abort does not reach the job: a cancelled request stops waiting at once, but its job is
      // left to settle (or time out) so that `release` can free the cache after the job, never before it.
      const attempt = this.#options.verifyClient.verify(
        replicaId,
        this.#held.jobFor(sequenceId, replicaId, job),
        timeout,
      );
      const settled = attempt.then(
        () => undefined,
        () => undefined,
      );
      this.#settling.set(sequenceId, settled);
      try {
        const result = await abortable(attempt, signal);
        if (result.history_needed) {
          this.#options.logger.debug({ sequenceId, replica: replicaId }, "replica lacks the held prefix; full history");
          this.#held.missed(sequenceId);
          this.#options.metrics?.recordHistoryNeeded(replicaId);
          continue;
        }
        this.#held.verified(sequenceId, replicaId, job, result);
        return { result, replicaId };
      } catch (error) {
        signal.throwIfAborted();
        const retryable = timeout.aborted || (error instanceof VerifyJobError && retryableCodes.has(error.code));
        if (!retryable) throw error;
        const reason = timeout.aborted ? `no answer in ${this.#options.verifyTimeoutMs} ms` : (error as Error).message;
        lastFailure = `last: replica ${replicaId}, ${reason}`;
        this.#options.logger.warn(
          { sequenceId, replica: replicaId, reason },
          "verify failed on replica; re-routing the round",
        );
        this.#unassign(sequenceId);
        const untried = [...this.#replicas.values()].some((r) => r !== replica && !failed.has(r));
        if (timeout.aborted && !resentAfterTimeout && !untried && this.#replicas.get(replicaId) === replica) {
          resentAfterTimeout = true;
        } else failed.add(replica);
      }
    }
  }

  /**
   * The request ended: once its last verify job has settled (a job finishing after a release would cache the
   * sequence again), frees the sequence's target cache (best effort) and forgets its affinity.
   */
  async release(sequenceId: string): Promise<void> {
    await this.#settling.get(sequenceId);
    this.#settling.delete(sequenceId);
    this.#held.forget(sequenceId);
    const replicaId = this.#affinity.get(sequenceId);
    this.#unassign(sequenceId);
    const replica = replicaId === undefined ? undefined : this.#replicas.get(replicaId);
    if (!replica) return;
    await new Promise<void>((resolve) => {
      replica.target.Release({ sequence_ids: [sequenceId] }, { deadline: Date.now() + 2000 }, (error) => {
        if (error) this.#options.logger.debug({ sequenceId, replica: replicaId, err: error }, "target release failed");
        resolve();
      });
    });
  }

  close(): void {
    this.#watch.stop();
    for (const replica of this.#replicas.values()) replica.target.close();
    this.#replicas.clear();
  }

  /** Routes the sequence; when no replica is left to try, waits up to `verifyTimeoutMs` for one to join. */
  async #routeOrWait(
    sequenceId: string,
    exclude: ReadonlySet<Replica>,
    signal: AbortSignal,
  ): Promise<[string, Replica]> {
    const giveUpAt = performance.now() + this.#options.verifyTimeoutMs;
    for (;;) {
      try {
        return this.#route(sequenceId, exclude);
      } catch (error) {
        if (!(error instanceof NoReplicaError) || performance.now() >= giveUpAt) throw error;
        await new Promise((resolve) => setTimeout(resolve, REPLICA_WAIT_POLL_MS));
        signal.throwIfAborted();
      }
    }
  }

  #route(sequenceId: string, exclude: ReadonlySet<Replica>): [string, Replica] {
    const current = this.#affinity.get(sequenceId);
    const held = current === undefined ? undefined : this.#replicas.get(current);
    if (current !== undefined && held !== undefined && !exclude.has(held)) return [current, held];
    let best: [string, Replica] | undefined;
    for (const entry of this.#replicas) {
      if (exclude.has(entry[1])) continue;
      if (!best || entry[1].sequences < best[1].sequences) best = entry;
    }
    if (!best) {
      throw new NoReplicaError(
        this.#replicas.size === 0
          ? `no target replica serving ${this.#options.model} is announced`
          : "every target replica failed this round",
      );
    }
    this.#affinity.set(sequenceId, best[0]);
    best[1].sequences++;
    return best;
  }

  #unassign(sequenceId: string): void {
    const replicaId = this.#affinity.get(sequenceId);
    if (replicaId === undefined) return;
    this.#affinity.delete(sequenceId);
    const replica = this.#replicas.get(replicaId);
    if (replica) replica.sequences--;
  }

  #lose(replicaId: string, reason: string): void {
    const replica = this.#replicas.get(replicaId);
    if (!replica) return;
    this.#options.logger.warn({ replica: replicaId, reason }, "target replica lost; its sequences move elsewhere");
    this.#replicas.delete(replicaId);
    replica.target.close();
    for (const [sequenceId, id] of this.#affinity) if (id === replicaId) this.#affinity.delete(sequenceId);
    void this.#options.verifyClient.replicaLost(replicaId, reason);
  }
}

const REPLICA_WAIT_POLL_MS = 100;

/** Failures another replica may not repeat: the replica is down, shutting down, full, or serves another model. */
const retryableCodes = new Set(["UNAVAILABLE", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"]);
