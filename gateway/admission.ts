/**
 * Admission control, by request count and by the target's KV memory. At most `maxInFlight` requests generate at once
 * (at most `maxInFlightPerTenant` of one tenant, so one tenant's burst cannot take every slot), and together they
 * reserve at most `kvBudgetBytes` of KV cache: each reserves the bytes of its whole possible sequence (prompt +
 * max_tokens) until it ends, however it ends, so the replicas' caches cannot be asked for more than they hold.
 *
 * A request that finds no room waits in a short FIFO queue (at most `maxQueued` requests, each at most `maxQueueMs`);
 * beyond that it is refused at once with a retry hint rather than left to wait behind work the gateway cannot start.
 * The queue's bounds are what bound the latency of the requests admitted under overload: a request waits at most
 * `maxQueueMs` for its slot, then generates beside at most `maxInFlight - 1` others. Draining refuses every new
 * request (so clients retry elsewhere) and resolves once the admitted ones have finished.
 *
 * Background work (batch items) never queues and never takes the last free slot: it is admitted only when no request
 * waits and a slot stays free beside it, so an interactive request arriving then starts at once rather than behind
 * it. Its caller waits `retryAfterMs` and asks again.
 */

export type RefusalReason = "full" | "tenant-full" | "memory" | "draining";

export class AdmissionRefused extends Error {
  override readonly name = "AdmissionRefused";
  constructor(
    readonly reason: RefusalReason,
    message: string,
    /** When a retry may find room, milliseconds from now (absent when draining: retry elsewhere at once). */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export interface Admitted {
  /** Frees the request's slot and KV reservation; later calls do nothing. */
  release(): void;
}

export interface AdmissionLimits {
  readonly maxInFlight: number;
  /** Default: no cap beyond `maxInFlight`. */
  readonly maxInFlightPerTenant?: number;
  /** Requests that may wait for room (default 0: refuse at once when full). */
  readonly maxQueued?: number;
  /** Longest wait for room before refusal, ms (default 1000). */
  readonly maxQueueMs?: number;
  /** KV bytes all admitted requests may reserve together (default: no limit). */
  readonly kvBudgetBytes?: number;
  /** KV bytes one token of a sequence occupies on a replica (default 0: memory not counted). */
  readonly kvBytesPerToken?: number;
}

export interface AdmissionAsk {
  /** "" gathers the requests that name none. */
  readonly tenant?: string;
  /** Tokens the request may hold in the target's cache: prompt + max_tokens. */
  readonly kvTokens?: number;
  /** Aborting while queued leaves the queue and rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** Admitted only into spare room, never queued (see above). */
  readonly background?: boolean;
}

interface Waiter {
  readonly tenant: string;
  readonly kvBytes: number;
  readonly admit: () => void;
  readonly refuse: (error: unknown) => void;
}

/** Weight of the latest request in the running mean of how long requests hold their slot. */
const HOLD_SMOOTHING = 0.2;
/** The mean hold time assumed before any request has ended, ms. */
const INITIAL_HOLD_MS = 1000;
const MIN_RETRY_AFTER_MS = 50;
const MAX_RETRY_AFTER_MS = 60_000;
const MIB = 2 ** 20;

export class Admission {
  readonly maxInFlight: number;
  readonly maxInFlightPerTenant: number;
  readonly maxQueued: number;
  readonly maxQueueMs: number;
  readonly kvBudgetBytes: number;
  readonly kvBytesPerToken: number;
  #inFlight = 0;
  #kvReserved = 0;
  /** Requests in flight or queued, per tenant. */
  readonly #perTenant = new Map<string, number>();
  readonly #queue: Waiter[] = [];
  #meanHoldMs = INITIAL_HOLD_MS;
  #draining = false;
  #idle: (() => void) | undefined;

  constructor(
    limits: AdmissionLimits,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.maxInFlight = limits.maxInFlight;
    this.maxInFlightPerTenant = limits.maxInFlightPerTenant ?? Number.POSITIVE_INFINITY;
    this.maxQueued = limits.maxQueued ?? 0;
    this.maxQueueMs = limits.maxQueueMs ?? 1000;
    this.kvBudgetBytes = limits.kvBudgetBytes ?? Number.POSITIVE_INFINITY;
    this.kvBytesPerToken = limits.kvBytesPerToken ?? 0;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** KV bytes the admitted requests hold reserved. */
  get kvReserved(): number {
    return this.#kvReserved;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Requests in flight or queued for one tenant ("" gathers the requests that name none). */
  inFlightOf(tenant: string): number {
    return this.#perTenant.get(tenant) ?? 0;
  }

  /** Resolves once the request may generate; rejects with AdmissionRefused (or the signal's reason when aborted). */
  admit(ask: AdmissionAsk = {}): Promise<Admitted> {
    const tenant = ask.tenant ?? "";
    const kvBytes = (ask.kvTokens ?? 0) * this.kvBytesPerToken;
    const refusal = this.#refusalAtDoor(tenant, kvBytes) ?? (ask.background ? this.#noSpareRoom(kvBytes) : undefined);
    if (refusal) return Promise.reject(refusal);
    this.#addTenant(tenant, 1);
    if (this.#queue.length === 0 && this.#fits(kvBytes)) return Promise.resolve(this.#grant(tenant, kvBytes));
    return new Promise((resolve, reject) => {
      const { signal } = ask;
      const leave = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.#queue.splice(this.#queue.indexOf(waiter), 1);
      };
      const waiter: Waiter = {
        tenant,
        kvBytes,
        admit: () => {
          leave();
          resolve(this.#grant(tenant, kvBytes));
        },
        refuse: (error) => {
          leave();
          this.#addTenant(tenant, -1);
          reject(error);
          // The head may have been what blocked the rest.
          this.#pump();
        },
      };
      const onAbort = () => waiter.refuse(signal?.reason);
      const timer = setTimeout(() => waiter.refuse(this.#fullRefusal(kvBytes, "waited")), this.maxQueueMs);
      if (signal?.aborted) {
        this.#addTenant(tenant, -1);
        clearTimeout(timer);
        reject(signal.reason);
        return;
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(waiter);
    });
  }

  /** Stops admitting (queued requests are refused too); resolves when no admitted request is left. */
  drain(): Promise<void> {
    this.#draining = true;
    for (const waiter of [...this.#queue]) waiter.refuse(drainingRefusal());
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#idle = resolve;
    });
  }

  /** When a request refused now may find room: the time for the requests ahead of it to free that many slots. */
  retryAfterMs(): number {
    const ahead = this.#queue.length + 1;
    const estimate = Math.ceil((this.#meanHoldMs * ahead) / this.maxInFlight);
    return Math.min(MAX_RETRY_AFTER_MS, Math.max(MIN_RETRY_AFTER_MS, estimate));
  }

  #refusalAtDoor(tenant: string, kvBytes: number): AdmissionRefused | undefined {
    if (this.#draining) return drainingRefusal();
    if (kvBytes > this.kvBudgetBytes) {
      return new AdmissionRefused(
        "memory",
        `the request needs ${mib(kvBytes)} of target KV memory (prompt + max_tokens), more than the gateway's KV memory limit of ${mib(this.kvBudgetBytes)}; shorten the prompt or lower max_tokens`,
      );
    }
    if (this.inFlightOf(tenant) >= this.maxInFlightPerTenant) {
      const who = tenant === "" ? "requests without a tenant are" : `tenant "${tenant}" is`;
      const retryAfterMs = this.retryAfterMs();
      return new AdmissionRefused(
        "tenant-full",
        `${who} at the per-tenant limit of ${this.maxInFlightPerTenant} requests in flight or waiting; retry in ${retryAfterMs} ms`,
        retryAfterMs,
      );
    }
    if (this.#queue.length >= this.maxQueued && !(this.#queue.length === 0 && this.#fits(kvBytes))) {
      return this.#fullRefusal(kvBytes, "queue full");
    }
    return undefined;
  }

  /** Background work's refusal unless a slot would stay free beside it (one slot in all: unless it is idle). */
  #noSpareRoom(kvBytes: number): AdmissionRefused | undefined {
    const spare = this.maxInFlight > 1 ? 1 : 0;
    if (this.#queue.length === 0 && this.#inFlight + 1 + spare <= this.maxInFlight && this.#fits(kvBytes)) {
      return undefined;
    }
    const retryAfterMs = this.retryAfterMs();
    return new AdmissionRefused(
      "full",
      `background work waits for spare room (${this.#inFlight} of ${this.maxInFlight} in flight, ${this.#queue.length} waiting); retry in ${retryAfterMs} ms`,
      retryAfterMs,
    );
  }

  /** The refusal of a request the gateway has no room for: names the limit that blocks it. */
  #fullRefusal(kvBytes: number, why: "queue full" | "waited"): AdmissionRefused {
    const retryAfterMs = this.retryAfterMs();
    const waited = why === "waited" ? ` (waited ${this.maxQueueMs} ms for room)` : "";
    const queue = this.maxQueued > 0 ? ` and ${this.#queue.length} waiting` : "";
    if (this.#inFlight < this.maxInFlight && !this.#fits(kvBytes)) {
      return new AdmissionRefused(
        "memory",
        `the gateway's KV memory limit of ${mib(this.kvBudgetBytes)} is reserved by the requests in flight (${mib(this.#kvReserved)}; this one needs ${mib(kvBytes)})${waited}; retry in ${retryAfterMs} ms`,
        retryAfterMs,
      );
    }
    return new AdmissionRefused(
      "full",
      `the gateway is serving its limit of ${this.maxInFlight} requests${queue}${waited}; retry in ${retryAfterMs} ms`,
      retryAfterMs,
    );
  }

  #fits(kvBytes: number): boolean {
    return this.#inFlight < this.maxInFlight && this.#kvReserved + kvBytes <= this.kvBudgetBytes;
  }

  #grant(tenant: string, kvBytes: number): Admitted {
    this.#inFlight++;
    this.#kvReserved += kvBytes;
    const started = this.now();
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#inFlight--;
        this.#kvReserved -= kvBytes;
        this.#addTenant(tenant, -1);
        this.#meanHoldMs += HOLD_SMOOTHING * (this.now() - started - this.#meanHoldMs);
        this.#pump();
        if (this.#inFlight === 0) this.#idle?.();
      },
    };
  }

  /** Admits queued requests in arrival order while the head fits (FIFO: a long prompt is not overtaken forever). */
  #pump(): void {
    if (this.#draining) return;
    while (this.#queue.length > 0 && this.#fits(this.#queue[0].kvBytes)) this.#queue[0].admit();
  }

  #addTenant(tenant: string, delta: number): void {
    const count = this.inFlightOf(tenant) + delta;
    if (count === 0) this.#perTenant.delete(tenant);
    else this.#perTenant.set(tenant, count);
  }
}

function drainingRefusal(): AdmissionRefused {
  return new AdmissionRefused("draining", "the gateway is shutting down");
}

function mib(bytes: number): string {
  return `${(bytes / MIB).toFixed(1)} MiB`;
}
