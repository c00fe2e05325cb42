import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { StopFilter, scanStops } from "../../services/engine/stop.ts";

describe("scanStops", () => {
  it("finds the earliest stop string and emits only the text before it", () => {
    assert.deepEqual(scanStops("The end. THE END", ["END", "end"]), { stopIndex: 4, stop: "end", safeLength: 4 });
  });

  it("holds back the longest suffix that could begin a stop string", () => {
    assert.deepEqual(scanStops("Once upon a ti", ["time", "tiger"]), {
      stopIndex: -1,
      stop: undefined,
      safeLength: 12,
    });
    assert.equal(scanStops("Once upon a", ["\n\n"]).safeLength, 11);
    assert.equal(scanStops("line\n", ["\n\n"]).safeLength, 4);
  });

  it("searches from where earlier scans left off", () => {
    assert.equal(scanStops("stop here, then stop", ["stop"], 5).stopIndex, 16);
  });

  it("ignores empty stop strings and works with none", () => {
    assert.deepEqual(scanStops("abc", ["", "x"]), { stopIndex: -1, stop: undefined, safeLength: 3 });
    assert.equal(scanStops("abc", []).safeLength, 3);
  });
});

describe("StopFilter", () => {
  it("matches a stop string split across deltas and never emits any of it", () => {
    const filter = new StopFilter(["The End"]);
    const out = ["Lily was happy. T", "he E", "nd and more"].map((d) => filter.push(d));
    assert.deepEqual(out, [
      { text: "Lily was happy. ", stopped: false },
      { text: "", stopped: false },
      { text: "", stopped: true },
    ]);
    assert.equal(filter.stop, "The End");
    assert.deepEqual(filter.push("more"), { text: "", stopped: true });
    assert.equal(filter.flush(), "");
  });

  it("releases held text when it turns out not to be a stop string, and at the end", () => {
    const filter = new StopFilter(["The End"]);
    assert.equal(filter.push("The").text, "");
    assert.equal(filter.push("n they").text, "Then they");
    assert.equal(filter.push(" played. The").text, " played. ");
    assert.equal(filter.flush(), "The");
  });
});
