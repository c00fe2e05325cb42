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
