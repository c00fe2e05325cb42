/**
 * The processes a local stack started, and their end: stopped in order (the gateway first, draining its requests,
 * then the draft service and the replicas, then redis-server), killed outright if the stack's own process exits
 * without stopping them (children live in their own process groups, so nothing else would).
 */
import type { RedisServer } from "./redis-server.ts";
import { describeExit, type ServiceProcess } from "./service-process.ts";

/** How long a service may drain after SIGTERM before it is killed (the stack sets its own drain limit below this). */
const STOP_GRACE_MS = 10_000;

export class StackProcesses {
  readonly #services: ServiceProcess[] = [];
  #redis: RedisServer | undefined;
  #stopping: Promise<void> | undefined;
  readonly #killAll = () => {
    for (const service of this.#services) service.kill();
    if (this.#redis) process.kill(this.#redis.pid, "SIGKILL");
  };

  constructor() {
    process.once("exit", this.#killAll);
  }

  /** Adds a service process, in start order. */
  add(service: ServiceProcess): void {
    this.#services.push(service);
  }

  /** The redis-server the stack started for itself. */
  set redis(redis: RedisServer) {
    this.#redis = redis;
  }

  get ownRedis(): boolean {
    return this.#redis !== undefined;
  }

  /** Every process started so far: the services, and redis-server when the stack started one. */
  get pids(): number[] {
    return [...this.#services.map((s) => s.pid), ...(this.#redis ? [this.#redis.pid] : [])];
  }

  /** Resolves with an error once a service exits on its own, before `stop` (never resolves otherwise). */
  failure(): Promise<Error> {
    return new Promise<Error>((resolve) => {
      for (const service of this.#services) {
        void service.exited.then((exit) => {
          if (!this.#stopping) resolve(new Error(`${service.name} ${describeExit(exit)}`));
        });
      }
    });
  }

  /** Stops the gateway (draining its requests), then the other services, then redis; idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const gateway = this.#services.filter((s) => s.name === "gateway");
      await Promise.all(gateway.map((s) => s.stop(STOP_GRACE_MS)));
      await Promise.all(this.#services.filter((s) => s.name !== "gateway").map((s) => s.stop(STOP_GRACE_MS)));
      await this.#redis?.stop();
      process.removeListener("exit", this.#killAll);
    })();
    return this.#stopping;
  }
}
