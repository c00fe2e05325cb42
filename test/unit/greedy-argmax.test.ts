import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { argmax } from "../../services/runtime/greedy.ts";

describe("argmax", () => {
  it("finds the largest logit of a row, the first one on ties, relative to the row's offset", () => {
    const rows = Float32Array.of(1, 5, 5, 0, /* row 2 */ -3, -1, -2, -1, /* row 3 */ 7, Number.NEGATIVE_INFINITY, 7, 9);
    assert.equal(argmax(rows, 0, 4), 1);
    assert.equal(argmax(rows, 4, 4), 1);
    assert.equal(argmax(rows, 8, 4), 3);
    assert.equal(argmax(rows, 8, 3), 0);
    assert.equal(argmax(rows), 11);
  });
});
