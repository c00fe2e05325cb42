/**
 * Admission control: at most `limit` requests generate at once; beyond it requests are refused at the door
 * (RESOURCE_EXHAUSTED) rather than queued behind work the gateway cannot start. Draining refuses every new request
 * (UNAVAILABLE, so clients retry elsewhere) and resolves once the admitted ones have finished.
 */

export type Admitted = { readonly admitted: true; release(): void };
export type Refused = { readonly admitted: false; readonly reason: "full" | "draining"; readonly message: string };

export class Admission {
  #inFlight = 0;
  #draining = false;
  #idle: (() => void) | undefined;

  constructor(readonly limit: number) {}

  get inFlight(): number {
    return this.#inFlight;
  }

  get draining(): boolean {
    return this.#draining;
  }

  admit(): Admitted | Refused {
    if (this.#draining) return { admitted: false, reason: "draining", message: "the gateway is shutting down" };
    if (this.#inFlight >= this.limit) {
      return {
        admitted: false,
        reason: "full",
        message: `the gateway is serving its limit of ${this.limit} requests; retry later`,
      };
    }
    this.#inFlight++;
    let released = false;
    return {
      admitted: true,
      release: () => {
        if (released) return;
        released = true;
        this.#inFlight--;
        if (this.#inFlight === 0) this.#idle?.();
      },
    };
  }

  /** Stops admitting; resolves when no admitted request is left. */
  drain(): Promise<void> {
    this.#draining = true;
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#idle = resolve;
    });
  }
}
