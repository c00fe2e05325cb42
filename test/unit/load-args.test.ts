import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { loadHelp, parseLoadArgs } from "../../bench/load.ts";

/** The flags without a default (absent from the parsed defaults). */
const OPTIONAL = ["address", "drafter", "max-in-flight", "max-queued", "max-queue-ms", "kv-budget-bytes"];

describe("npm run load flags", () => {
  it("defaults: a bounded run on its own stack, with the documented lengths and objective", () => {
    const args = parseLoadArgs([]);
    assert.equal(args.address, undefined);
    assert.equal(args.requests, 100);
    assert.equal(args["duration-s"], 60);
    assert.deepEqual(
      [args["prompt-median"], args["prompt-sigma"], args["output-median"], args["output-sigma"]],
      [64, 0.7, 48, 0.6],
    );
    assert.deepEqual([args["ttft-slo-ms"], args["tpot-slo-ms"]], [1000, 100]);
    assert.equal(args.json, false);
    const given = parseLoadArgs(["--rate", "2.5", "--json", "--address", "127.0.0.1:50051", "--max-queued", "0"]);
    assert.equal(given.rate, 2.5);
    assert.equal(given.json, true);
    assert.equal(given["max-queued"], 0);
  });

  it("runs against this machine only, and refuses bad values", () => {
    assert.throws(() => parseLoadArgs(["--address", "10.0.0.7:50051"]), /only runs against this machine/);
    parseLoadArgs(["--address", "localhost:50051"]);
    assert.throws(() => parseLoadArgs(["--rate", "0"]));
    assert.throws(() => parseLoadArgs(["--requests", "many"]));
    assert.throws(() => parseLoadArgs(["--no-such-flag"]));
  });

  it("--help documents every flag", () => {
    const help = loadHelp();
    for (const flag of Object.keys(parseLoadArgs([])).concat(OPTIONAL)) {
      assert.match(help, new RegExp(`--${flag} `), `--${flag} in the help`);
    }
  });
});
