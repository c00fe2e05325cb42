/**
 * The processes a local stack started, and their end: supervised once the stack is up (a crashed service is
 * restarted: supervised-service.ts), stopped in order (restarts cancelled first, then the gateway, draining its
 * requests, then the draft service and the replicas, then redis-server), killed outright if the stack's own process
 * exits without stopping them (children live in their own process groups, so nothing else would).
 */
import type { RedisServer } from "./redis-server.ts";
import type { SupervisedService } from "./supervised-service.ts";

/** How long a service may drain after SIGTERM before it is killed (the stack sets its own drain limit below this). */
const STOP_GRACE_MS = 10_000;

export class StackProcesses {
  readonly #services: SupervisedService[] = [];
  #redis: RedisServer | undefined;
  #stopping: Promise<void> | undefined;
  readonly #killAll = () => {
    for (const service of this.#services) service.process.kill();
    if (this.#redis) process.kill(this.#redis.pid, "SIGKILL");
  };

  constructor() {
    process.once("exit", this.#killAll);
  }

  /** Adds a service process, in start order. */
  add(service: SupervisedService): void {
    this.#services.push(service);
  }

  /** The redis-server the stack started for itself. */
  set redis(redis: RedisServer) {
    this.#redis = redis;
  }

  get ownRedis(): boolean {
    return this.#redis !== undefined;
  }

  /** The processes running now: the services' current ones, and redis-server when the stack started one. */
  get pids(): number[] {
    return [...this.#services.map((s) => s.process.pid), ...(this.#redis ? [this.#redis.pid] : [])];
  }

  /** Start-up is over: from now on a service that exits is restarted. */
  supervise(): void {
    for (const service of this.#services) service.supervise();
  }

  /** Resolves with the reason once a service crashed too often to be restarted (never resolves otherwise). */
  failure(): Promise<Error> {
    return Promise.race(this.#services.map((s) => s.gaveUp));
  }

  /** Stops the gateway (draining its requests), then the other services, then redis; idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await Promise.all(this.#services.map((s) => s.unsupervise()));
      const gateway = this.#services.filter((s) => s.name === "gateway");
      await Promise.all(gateway.map((s) => s.process.stop(STOP_GRACE_MS)));
      await Promise.all(this.#services.filter((s) => s.name !== "gateway").map((s) => s.process.stop(STOP_GRACE_MS)));
      await this.#redis?.stop();
      process.removeListener("exit", this.#killAll);
    })();
    return this.#stopping;
  }
}
