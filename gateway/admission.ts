/**
 * Admission control: at most `limit` requests generate at once, and at most `perTenantLimit` of them for any one
 * tenant (so one tenant's burst cannot take every slot); beyond either, requests are refused at the door
 * (RESOURCE_EXHAUSTED) rather than queued behind work the gateway cannot start. Draining refuses every new request
 * (UNAVAILABLE, so clients retry elsewhere) and resolves once the admitted ones have finished.
 */

export type Admitted = { readonly admitted: true; release(): void };
export type Refused = {
  readonly admitted: false;
  readonly reason: "full" | "tenant-full" | "draining";
  readonly message: string;
};

export class Admission {
  #inFlight = 0;
  readonly #perTenant = new Map<string, number>();
  #draining = false;
  #idle: (() => void) | undefined;

  constructor(
    readonly limit: number,
    readonly perTenantLimit = Number.POSITIVE_INFINITY,
  ) {}

  get inFlight(): number {
    return this.#inFlight;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Requests in flight for one tenant ("" gathers the requests that name none). */
  inFlightOf(tenant: string): number {
    return this.#perTenant.get(tenant) ?? 0;
  }

  admit(tenant = ""): Admitted | Refused {
    if (this.#draining) return { admitted: false, reason: "draining", message: "the gateway is shutting down" };
    const tenantInFlight = this.inFlightOf(tenant);
    if (tenantInFlight >= this.perTenantLimit) {
      const who = tenant === "" ? "requests without a tenant are" : `tenant "${tenant}" is`;
      return {
        admitted: false,
        reason: "tenant-full",
        message: `${who} at the per-tenant limit of ${this.perTenantLimit} requests in flight; retry later`,
      };
    }
    if (this.#inFlight >= this.limit) {
      return {
        admitted: false,
        reason: "full",
        message: `the gateway is serving its limit of ${this.limit} requests; retry later`,
      };
    }
    this.#inFlight++;
    this.#perTenant.set(tenant, tenantInFlight + 1);
    let released = false;
    return {
      admitted: true,
      release: () => {
        if (released) return;
        released = true;
        this.#inFlight--;
        const left = this.inFlightOf(tenant) - 1;
        if (left === 0) this.#perTenant.delete(tenant);
        else this.#perTenant.set(tenant, left);
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
