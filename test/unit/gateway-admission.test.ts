import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Admission } from "../../gateway/admission.ts";

describe("gateway admission", () => {
  it("admits up to the limit, refuses beyond it, and admits again after a release", () => {
    const admission = new Admission(2);
    const a = admission.admit();
    const b = admission.admit();
    assert.ok(a.admitted && b.admitted);
    const c = admission.admit();
    assert.equal(c.admitted, false);
    assert.equal(!c.admitted && c.reason, "full");
    assert.match(!c.admitted ? c.message : "", /limit of 2 requests/);
    a.release();
    a.release();
    assert.equal(admission.inFlight, 1, "releasing twice counts once");
    assert.ok(admission.admit().admitted);
  });

  it("caps each tenant beside the global limit, naming the tenant's limit", () => {
    const admission = new Admission(3, 1);
    const acme = admission.admit("acme");
    assert.ok(acme.admitted);
    const again = admission.admit("acme");
    assert.equal(!again.admitted && again.reason, "tenant-full");
    assert.match(!again.admitted ? again.message : "", /tenant "acme" is at the per-tenant limit of 1 requests/);
    const anonymous = admission.admit();
    assert.ok(anonymous.admitted, "another tenant (here: none) still gets a slot");
    const anonymousAgain = admission.admit("");
    assert.match(
      !anonymousAgain.admitted ? anonymousAgain.message : "",
      /requests without a tenant are at the per-tenant/,
    );
    assert.ok(admission.admit("beta").admitted);
    const full = admission.admit("gamma");
    assert.equal(!full.admitted && full.reason, "full", "the global limit still holds");
    assert.equal(admission.inFlightOf("acme"), 1);
    acme.release();
    acme.release();
    assert.equal(admission.inFlightOf("acme"), 0, "releasing twice counts once");
    assert.ok(admission.admit("acme").admitted);
  });

  it("draining refuses new requests and resolves once the admitted ones finish", async () => {
    const admission = new Admission(4);
    const running = admission.admit();
    assert.ok(running.admitted);
    let drained = false;
    const draining = admission.drain().then(() => {
      drained = true;
    });
    const late = admission.admit();
    assert.equal(!late.admitted && late.reason, "draining");
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(drained, false);
    running.release();
    await draining;
    assert.equal(drained, true);
  });

  it("drains at once when idle", async () => {
    await new Admission(1).drain();
  });
});
