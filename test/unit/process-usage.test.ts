/**
 * bench/process-usage.ts: schedstat lines parse to milliseconds, and a process's measured CPU time covers work it did
 * in the measured interval (Linux /proc, as on every machine the benchmark runs on).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { describe, it } from "node:test";
import { parseSchedstat, processUsage, UsageMeter } from "../../bench/process-usage.ts";

describe("process usage", () => {
  it("parses a schedstat line", () => {
    assert.deepEqual(parseSchedstat("123456789 2000000 7\n"), { cpuMs: 123.456789, waitMs: 2, slices: 7 });
    assert.throws(() => parseSchedstat("not numbers"), /not a schedstat line/);
  });

  it("measures the CPU time another process spends in an interval, and nothing for one that is gone", async (t) => {
    // A child that burns 200 ms of its own CPU time when told to (CPU time, not wall time: on a loaded machine 200 ms
    // of wall time may hold much less CPU), says so, and exits when its stdin ends.
    const child = spawn(process.execPath, [
      "-e",
      `process.stdin.once("data", () => {
        const start = process.cpuUsage();
        while (process.cpuUsage(start).user < 200_000);
        process.stdout.write("done");
      });
      process.stdin.on("end", () => process.exit(0));`,
    ]);
    // A failed assertion must not leave the child holding the test process open.
    t.after(() => child.kill("SIGKILL"));
    const pid = child.pid as number;
    assert.ok(processUsage(pid), "schedstats readable for a live process");
    const meter = new UsageMeter(new Map([["child", pid]]));
    await meter.measure(async () => {
      child.stdin.write("go");
      await once(child.stdout, "data");
    });
    const total = meter.totals().get("child");
    assert.ok(total, "the child was measured");
    assert.ok(total.cpuMs >= 150, `about 200 ms of CPU, measured ${total.cpuMs}`);
    assert.ok(total.slices >= 1 && total.waitMs >= 0);
    child.stdin.end();
    await once(child, "exit");
    assert.equal(processUsage(pid), undefined);
  });
});
