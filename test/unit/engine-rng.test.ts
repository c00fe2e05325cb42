import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { philox4x32, Stream, uniform } from "../../services/engine/rng.ts";

describe("philox4x32", () => {
  it("reproduces the Random123 known-answer vectors", () => {
    assert.deepEqual(philox4x32([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    const ones = 0xffffffff;
    assert.deepEqual(
      philox4x32([ones, ones, ones, ones], [ones, ones]),
      [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    );
    assert.deepEqual(
      philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
      [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    );
  });
});

describe("uniform", () => {
  it("is a pure function of (seed, position, stream)", () => {
    assert.equal(uniform(42, 7, Stream.accept), uniform(42, 7, Stream.accept));
    const draws = new Set([
      uniform(42, 7, Stream.accept),
      uniform(42, 7, Stream.draft),
      uniform(42, 8, Stream.accept),
      uniform(43, 7, Stream.accept),
      uniform(2 ** 40 + 42, 7, Stream.accept),
    ]);
    assert.equal(draws.size, 5);
  });

  it("is uniform on [0, 1)", () => {
    const bins = new Array(10).fill(0);
    const n = 50_000;
    for (let i = 0; i < n; i++) {
      const u = uniform(1234, i, Stream.target);
      assert.ok(u >= 0 && u < 1);
      bins[Math.floor(u * 10)]++;
    }
    // Chi-square with 9 degrees of freedom, 0.001 critical value 27.88.
    const chi = bins.reduce((s, o) => s + (o - n / 10) ** 2 / (n / 10), 0);
    assert.ok(chi < 27.88, `chi-square ${chi}`);
  });
});
