import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Admission, AdmissionRefused, type Admitted } from "../../gateway/admission.ts";

/** The refusal `admit` rejects with (fails when it admits). */
async function refusal(pending: Promise<Admitted>): Promise<AdmissionRefused> {
  try {
    const admitted = await pending;
    admitted.release();
  } catch (error) {
    assert.ok(error instanceof AdmissionRefused, String(error));
    return error;
  }
  assert.fail("admitted, expected a refusal");
}

/** Whether `pending` has settled after the microtasks and timers due now have run. */
async function settled(pending: Promise<unknown>): Promise<boolean> {
  let done = false;
  pending.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  await new Promise((resolve) => setImmediate(resolve));
  return done;
}

describe("gateway admission by request count", () => {
  it("admits up to the limit, refuses beyond it with a retry hint, and admits again after a release", async () => {
    const admission = new Admission({ maxInFlight: 2 });
    const a = await admission.admit();
    await admission.admit();
    const c = await refusal(admission.admit());
    assert.equal(c.reason, "full");
    assert.match(c.message, /limit of 2 requests/);
    assert.ok(c.retryAfterMs !== undefined && c.retryAfterMs > 0, "a refusal for being full says when to retry");
    a.release();
    a.release();
    assert.equal(admission.inFlight, 1, "releasing twice counts once");
    await admission.admit();
  });

  it("caps each tenant beside the global limit, naming the tenant's limit", async () => {
    const admission = new Admission({ maxInFlight: 3, maxInFlightPerTenant: 1 });
    const acme = await admission.admit({ tenant: "acme" });
    const again = await refusal(admission.admit({ tenant: "acme" }));
    assert.equal(again.reason, "tenant-full");
    assert.match(again.message, /tenant "acme" is at the per-tenant limit of 1 requests/);
    await admission.admit();
    assert.match((await refusal(admission.admit({ tenant: "" }))).message, /requests without a tenant are at the/);
    await admission.admit({ tenant: "beta" });
    assert.equal((await refusal(admission.admit({ tenant: "gamma" }))).reason, "full", "the global limit holds");
    assert.equal(admission.inFlightOf("acme"), 1);
    acme.release();
    acme.release();
    assert.equal(admission.inFlightOf("acme"), 0, "releasing twice counts once");
  });

  it("queues up to maxQueued requests in arrival order and admits them as slots free", async () => {
    const admission = new Admission({ maxInFlight: 1, maxQueued: 2, maxQueueMs: 60_000 });
    const first = await admission.admit();
    const order: string[] = [];
    const inOrder = (name: string) => (admitted: Admitted) => {
      order.push(name);
      return admitted;
    };
    const second = admission.admit().then(inOrder("second"));
    const third = admission.admit().then(inOrder("third"));
    assert.equal(admission.queued, 2);
    const fourth = await refusal(admission.admit());
    assert.equal(fourth.reason, "full");
    assert.match(fourth.message, /limit of 1 requests and 2 waiting/);
    assert.equal(await settled(second), false, "a queued request waits for a slot");
    first.release();
    (await second).release();
    (await third).release();
    assert.deepEqual(order, ["second", "third"]);
    assert.equal(admission.inFlight, 0);
  });

  it("refuses a queued request after maxQueueMs, and one whose caller aborts at once", async () => {
    const admission = new Admission({ maxInFlight: 1, maxQueued: 4, maxQueueMs: 20 });
    const held = await admission.admit({ tenant: "acme" });
    const late = await refusal(admission.admit({ tenant: "acme" }));
    assert.equal(late.reason, "full");
    assert.match(late.message, /waited 20 ms for room/);
    const controller = new AbortController();
    const waiting = admission.admit({ signal: controller.signal });
    controller.abort(new Error("client went away"));
    await assert.rejects(waiting, /client went away/);
    assert.equal(admission.queued, 0);
    assert.equal(admission.inFlightOf("acme"), 1, "the refused request no longer counts for its tenant");
    held.release();
    assert.equal(admission.inFlight, 0);
  });

  it("draining refuses the queued and new requests and resolves once the admitted ones finish", async () => {
    const admission = new Admission({ maxInFlight: 1, maxQueued: 1, maxQueueMs: 60_000 });
    const running = await admission.admit();
    const queued = admission.admit();
    let drained = false;
    const draining = admission.drain().then(() => {
      drained = true;
    });
    assert.equal((await refusal(queued)).reason, "draining");
    const late = await refusal(admission.admit());
    assert.equal(late.reason, "draining");
    assert.equal(late.retryAfterMs, undefined, "a draining gateway sends clients elsewhere at once");
    assert.equal(drained, false);
    running.release();
    await draining;
    assert.equal(drained, true);
  });

  it("drains at once when idle", async () => {
    await new Admission({ maxInFlight: 1 }).drain();
  });

  it("hints a retry after the time the requests ahead take to free a slot", async () => {
    let now = 0;
    const admission = new Admission({ maxInFlight: 2, maxQueued: 1, maxQueueMs: 60_000 }, () => now);
    const requests = [await admission.admit(), await admission.admit()];
    now = 1000;
    for (const request of requests) request.release();
    // Each held its slot 1000 ms: the running mean moved from its start (1000 ms) nowhere.
    assert.equal(admission.retryAfterMs(), 500, "one request ahead, two slots: half a hold time");
    const held = [await admission.admit(), await admission.admit()];
    const queued = admission.admit();
    assert.equal(admission.retryAfterMs(), 1000, "the queued one is ahead too");
    now = 5000;
    held[0].release();
    held[1].release();
    (await queued).release();
    assert.ok(admission.retryAfterMs() > 500, "longer requests lengthen the hint");
  });
});

describe("gateway admission by KV memory", () => {
  const limits = { maxInFlight: 8, kvBudgetBytes: 1000, kvBytesPerToken: 10 };

  it("reserves prompt + max_tokens of KV per request and frees it on release", async () => {
    const admission = new Admission(limits);
    const a = await admission.admit({ kvTokens: 60 });
    assert.equal(admission.kvReserved, 600);
    const b = await admission.admit({ kvTokens: 40 });
    assert.equal(admission.kvReserved, 1000, "a request may fill the budget exactly");
    const refused = await refusal(admission.admit({ kvTokens: 1 }));
    assert.equal(refused.reason, "memory");
    assert.match(refused.message, /KV memory limit of 0\.0 MiB is reserved/);
    assert.ok(refused.retryAfterMs !== undefined);
    a.release();
    a.release();
    assert.equal(admission.kvReserved, 400, "releasing twice frees once");
    b.release();
    assert.equal(admission.kvReserved, 0);
  });

  it("refuses at once, without a retry hint, a request larger than the whole budget", async () => {
    const admission = new Admission({ ...limits, maxQueued: 4 });
    const refused = await refusal(admission.admit({ kvTokens: 101 }));
    assert.equal(refused.reason, "memory");
    assert.match(refused.message, /more than the gateway's KV memory limit/);
    assert.equal(refused.retryAfterMs, undefined, "retrying the same request cannot help");
    assert.equal(admission.queued, 0);
  });

  it("a burst of long prompts: as many as fit run, the rest wait in order, then are refused naming memory", async () => {
    const admission = new Admission({ ...limits, maxQueued: 2, maxQueueMs: 30 });
    const burst = Array.from({ length: 5 }, () =>
      admission.admit({ kvTokens: 45 }).then(
        (a) => a,
        (e) => e,
      ),
    );
    const outcomes = await Promise.all(burst);
    const admitted = outcomes.filter((o) => !(o instanceof AdmissionRefused)) as Admitted[];
    const refused = outcomes.filter((o) => o instanceof AdmissionRefused);
    assert.equal(admitted.length, 2, "two of 450 bytes fit in 1000");
    assert.equal(refused.length, 3);
    for (const r of refused) {
      assert.equal(r.reason, "memory");
      assert.match(r.message, /KV memory limit/);
    }
    assert.equal(admission.kvReserved, 900);
    for (const a of admitted) a.release();
    assert.equal(admission.kvReserved, 0);
  });

  it("a queued request waiting for memory is admitted when enough is released, not before", async () => {
    const admission = new Admission({ ...limits, maxQueued: 2, maxQueueMs: 60_000 });
    const big = await admission.admit({ kvTokens: 80 });
    const small = await admission.admit({ kvTokens: 10 });
    const waiting = admission.admit({ kvTokens: 50 });
    small.release();
    assert.equal(await settled(waiting), false, "300 bytes free, 500 needed");
    big.release();
    (await waiting).release();
    assert.equal(admission.kvReserved, 0);
  });
});

describe("gateway admission of background work (batch items)", () => {
  it("takes a slot only while another stays free, and never queues", async () => {
    const admission = new Admission({ maxInFlight: 3, maxQueued: 4 });
    const first = await admission.admit({ background: true });
    const second = await admission.admit({ background: true });
    const third = await refusal(admission.admit({ background: true }));
    assert.equal(third.reason, "full");
    assert.match(third.message, /background work waits for spare room \(2 of 3 in flight/);
    assert.ok(third.retryAfterMs !== undefined && third.retryAfterMs > 0);
    assert.equal(admission.queued, 0, "refused, not queued");
    const interactive = await admission.admit();
    assert.equal(admission.inFlight, 3, "the slot left free went to the interactive request");
    for (const admitted of [first, second, interactive]) admitted.release();
  });

  it("yields to interactive requests waiting in the queue", async () => {
    const admission = new Admission({ maxInFlight: 4, maxQueued: 4, kvBudgetBytes: 100, kvBytesPerToken: 1 });
    const holder = await admission.admit({ kvTokens: 60 });
    const waiting = admission.admit({ kvTokens: 60 });
    assert.equal(admission.queued, 1, "the second request waits for KV memory");
    const refused = await refusal(admission.admit({ background: true, kvTokens: 1 }));
    assert.match(refused.message, /1 waiting/);
    holder.release();
    (await waiting).release();
    (await admission.admit({ background: true, kvTokens: 1 })).release();
  });

  it("runs alone on a gateway of one slot, only when it is idle", async () => {
    const admission = new Admission({ maxInFlight: 1 });
    const batch = await admission.admit({ background: true });
    assert.equal((await refusal(admission.admit({ background: true }))).reason, "full");
    batch.release();
    const interactive = await admission.admit();
    assert.equal((await refusal(admission.admit({ background: true }))).reason, "full");
    interactive.release();
  });
});
