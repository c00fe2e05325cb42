/**
 * A service of the local stack kept running. Until `supervise` (the stack's start-up) an exit is the caller's to
 * report as a failed start; afterwards an exit is logged, and the service started again with the same settings (same
 * ports, same replica id) after a backoff, while the other services keep serving; the log says when it serves again.
 * When it crashes too often (restart-policy.ts), `gaveUp` resolves with a message naming it and its last lines.
 * `unsupervise` cancels a pending restart and waits for one being spawned, so a restart never races the stack's stop.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { FIRST_DELAY_MS, isCrash, type RestartPolicy, restartDecision } from "./restart-policy.ts";
import { describeExit, type Exit, ServiceProcess, type ServiceProcessSpec } from "./service-process.ts";

export class SupervisedService {
  readonly name: string;
  /** Resolves with the reason once the service is left down (never resolves otherwise). */
  readonly gaveUp: Promise<Error>;
  #process: ServiceProcess;
  #watching: Promise<void> | undefined;
  #giveUp: (error: Error) => void = () => {};
  readonly #crashes: number[] = [];
  readonly #stopping = new AbortController();

  private constructor(
    private readonly spec: ServiceProcessSpec,
    private readonly log: (line: string) => void,
    private readonly policy: RestartPolicy,
    private readonly serving: (process: ServiceProcess) => Promise<void>,
    first: ServiceProcess,
  ) {
    this.name = spec.name;
    this.#process = first;
    this.gaveUp = new Promise((resolve) => {
      this.#giveUp = resolve;
    });
  }

  /**
   * Resolves once the first process runs (it serves later). `serving` resolves once a process serves, and rejects if
   * it dies first or does not serve in time: it tells when a restarted one is back.
   */
  static async start(
    spec: ServiceProcessSpec,
    log: (line: string) => void,
    policy: RestartPolicy,
    serving: (process: ServiceProcess) => Promise<void>,
  ): Promise<SupervisedService> {
    return new SupervisedService(spec, log, policy, serving, await ServiceProcess.start(spec, log));
  }

  /** The process running now (a new one after each restart). */
  get process(): ServiceProcess {
    return this.#process;
  }

  /** From now on an exit is a crash, and the service is restarted. */
  supervise(): void {
    this.#watching ??= this.#watch();
  }

  /** No restart from now on; resolves once none is under way (the current process is then the one to stop). */
  async unsupervise(): Promise<void> {
    this.#stopping.abort();
    await this.#watching;
  }

  async #watch(): Promise<void> {
    const stopping = this.#stopping.signal;
    const stopped = new Promise<undefined>((resolve) => stopping.addEventListener("abort", () => resolve(undefined)));
    for (;;) {
      const exit: Exit | undefined = await Promise.race([this.#process.exited, stopped]);
      if (exit === undefined || stopping.aborted) return;
      let delayMs = FIRST_DELAY_MS;
      if (isCrash(exit)) {
        const now = Date.now();
        const decision = restartDecision(this.#crashes, now, this.policy);
        this.#crashes.push(now);
        const within = `${decision.crashesInWindow} crash${decision.crashesInWindow > 1 ? "es" : ""} within ${this.policy.windowMs / 1000} s`;
        if (!decision.restart) {
          this.#giveUp(new Error(`${this.name} ${describeExit(exit)}: ${within}, giving up${this.#lastLines()}`));
          return;
        }
        delayMs = decision.delayMs;
        this.log(`[stack] ${this.name} ${describeExit(exit)} (${within}): restarting it in ${delayMs} ms`);
      } else {
        this.log(`[stack] ${this.name} ${describeExit(exit)} (a clean stop, no crash): restarting it in ${delayMs} ms`);
      }
      try {
        await sleep(delayMs, undefined, { signal: stopping });
      } catch {
        return;
      }
      try {
        this.#process = await ServiceProcess.start(this.spec, this.log);
      } catch (error) {
        this.#giveUp(new Error(`${this.name} could not be restarted: ${(error as Error).message}`));
        return;
      }
      const restarted = this.#process;
      this.log(`[stack] ${this.name} restarted (pid ${restarted.pid})`);
      // Not awaited: an exit while it starts is the loop's to handle, as any other.
      this.serving(restarted).then(
        () => this.log(`[stack] ${this.name} serving again (pid ${restarted.pid})`),
        (error: Error) => {
          if (restarted.running) this.log(`[stack] ${this.name} restarted but not serving: ${error.message}`);
        },
      );
    }
  }

  #lastLines(): string {
    const lines = this.#process.recentLines();
    return lines.length > 0 ? `; its last lines:\n${lines.map((line) => `    ${line}`).join("\n")}` : "";
  }
}
