/**
 * The batcher: which jobs share a batch, as the target's micro-batcher (the items of a turn share a batch) and as the
 * draft service's (an idle batcher starts at once). Waits are made long (a minute) where the behaviour under test
 * is "does not wait", so a wrong wait shows up as a test timeout rather than as a timing assertion.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Batcher } from "../../services/batching/batcher.ts";

interface Job {
  readonly seq: string;
  readonly value: number;
}

const NEVER = 60_000;
const TEST_TIMEOUT = { timeout: 10_000 };

/**
 * A batcher whose run takes a millisecond, doubles values (an Error for negative ones) and records each batch's
 * sequences. Waits are bounded by maxWaitMs alone (the share of run time is made huge).
 */
function recordingBatcher(maxBatchSize: number, maxWaitMs: number, hold = () => sleep(1)) {
  const batches: string[][] = [];
  const batcher = new Batcher<Job, number>({
    shareTurn: true,
    maxBatchSize,
    maxWaitMs,
    maxWaitShare: 1e6,
    key: (job) => job.seq,
    run: async (jobs) => {
      batches.push(jobs.map((j) => j.seq));
      await hold();
      return jobs.map((j) => (j.value < 0 ? new Error(`negative ${j.value}`) : j.value * 2));
    },
  });
  return { batcher, batches };
}

const job = (seq: string, value = 1): Job => ({ seq, value });

describe("Batcher", () => {
  test("jobs handed in during one event-loop turn share one batch", TEST_TIMEOUT, async () => {
    const { batcher, batches } = recordingBatcher(16, NEVER);
    const results = await Promise.all(["a", "b", "c"].map((s, i) => batcher.submit(job(s, i))));
    assert.deepEqual(results, [0, 2, 4]);
    assert.deepEqual(batches, [["a", "b", "c"]]);
  });

  test("a lone stream never waits for others", TEST_TIMEOUT, async () => {
    const { batcher, batches } = recordingBatcher(16, NEVER);
    for (let round = 0; round < 5; round++) assert.equal(await batcher.submit(job("a", round)), 2 * round);
    assert.deepEqual(batches, [["a"], ["a"], ["a"], ["a"], ["a"]]);
  });

  test("a batch waits for the sequences of recent batches to rejoin", TEST_TIMEOUT, async () => {
    const { batcher, batches } = recordingBatcher(16, NEVER);
    await Promise.all([batcher.submit(job("a")), batcher.submit(job("b"))]);
    const first = batcher.submit(job("a"));
    await sleep(20);
    await Promise.all([first, batcher.submit(job("b"))]);
    assert.deepEqual(batches, [
      ["a", "b"],
      ["a", "b"],
    ]);
  });

  test("the wait never exceeds a share of the batches' run time", TEST_TIMEOUT, async () => {
    const batches: string[][] = [];
    const batcher = new Batcher<Job, number>({
      shareTurn: true,
      maxBatchSize: 16,
      maxWaitMs: NEVER,
      key: (job) => job.seq,
      run: async (jobs) => {
        batches.push(jobs.map((j) => j.seq));
        await sleep(1);
        return jobs.map((j) => j.value);
      },
    });
    await Promise.all([batcher.submit(job("a")), batcher.submit(job("b"))]);
    await batcher.submit(job("a"));
    assert.deepEqual(batches, [["a", "b"], ["a"]]);
  });

  test("the wait for absent sequences ends after maxWaitMs", TEST_TIMEOUT, async () => {
    const { batcher, batches } = recordingBatcher(16, 5);
    await Promise.all([batcher.submit(job("a")), batcher.submit(job("b"))]);
    await batcher.submit(job("a"));
    assert.deepEqual(batches, [["a", "b"], ["a"]]);
  });

  test("forgotten sequences are not waited for", TEST_TIMEOUT, async () => {
    const { batcher, batches } = recordingBatcher(16, NEVER);
    await Promise.all([batcher.submit(job("a")), batcher.submit(job("b"))]);
    batcher.forget(["b"]);
    await batcher.submit(job("a"));
    assert.deepEqual(batches, [["a", "b"], ["a"]]);
  });

  test("batches hold at most maxBatchSize jobs and never two of one sequence", TEST_TIMEOUT, async () => {
    const { batcher, batches } = recordingBatcher(2, NEVER);
    const results = await Promise.all(
      [job("a", 1), job("a", 2), job("b", 3), job("c", 4), job("d", 5)].map((j) => batcher.submit(j)),
    );
    assert.deepEqual(results, [2, 4, 6, 8, 10]);
    assert.deepEqual(batches, [["a", "b"], ["a", "c"], ["d"]]);
  });

  test("jobs arriving while a batch runs form the next batch", TEST_TIMEOUT, async () => {
    let release!: () => void;
    let held = true;
    // A finite wait: once "a" is done, the next batch waits a little for it (it was in the last batch), then runs.
    const { batcher, batches } = recordingBatcher(16, 5, () =>
      held ? new Promise<void>((resolve) => (release = resolve)) : sleep(1),
    );
    const first = batcher.submit(job("a"));
    await sleep(5);
    const next = [batcher.submit(job("b")), batcher.submit(job("c"))];
    await sleep(5);
    held = false;
    release();
    await Promise.all([first, ...next]);
    assert.deepEqual(batches, [["a"], ["b", "c"]]);
  });

  test("an Error outcome fails its job alone; a failed run fails the whole batch", TEST_TIMEOUT, async () => {
    const { batcher } = recordingBatcher(16, NEVER);
    const settled = await Promise.allSettled([batcher.submit(job("a", 1)), batcher.submit(job("b", -1))]);
    assert.equal(settled[0].status, "fulfilled");
    assert.equal(settled[1].status, "rejected");
    assert.match(String((settled[1] as PromiseRejectedResult).reason), /negative -1/);

    const failing = new Batcher<Job, number>({
      shareTurn: true,
      maxBatchSize: 4,
      maxWaitMs: 0,
      key: (j) => j.seq,
      run: async () => {
        throw new Error("forward failed");
      },
    });
    const all = await Promise.allSettled([failing.submit(job("a")), failing.submit(job("b"))]);
    assert.deepEqual(
      all.map((s) => s.status),
      ["rejected", "rejected"],
    );
  });

  test("drain runs the jobs in hand without waiting and refuses new ones", TEST_TIMEOUT, async () => {
    const { batcher, batches } = recordingBatcher(16, NEVER);
    await Promise.all([batcher.submit(job("a")), batcher.submit(job("b"))]);
    const inHand = batcher.submit(job("a"));
    await batcher.drain();
    assert.equal(await inHand, 2);
    assert.equal(batcher.inHand, 0);
    await assert.rejects(batcher.submit(job("c")), /draining/);
    assert.deepEqual(batches, [["a", "b"], ["a"]]);
  });

  test(
    "without shareTurn an idle batcher runs at once, alone; what arrives meanwhile shares the next batch",
    TEST_TIMEOUT,
    async () => {
      const batches: string[][] = [];
      let release!: () => void;
      const batcher = new Batcher<Job, number>({
        shareTurn: false,
        key: (j) => j.seq,
        run: async (jobs) => {
          batches.push(jobs.map((j) => j.seq));
          if (batches.length === 1) await new Promise<void>((resolve) => (release = resolve));
          return jobs.map((j) => j.value);
        },
      });
      const first = batcher.submit(job("a", 0));
      assert.deepEqual(batches, [["a"]], "the run must start inside submit");
      const seqs = Array.from({ length: 20 }, (_, i) => `s${i}`);
      const rest = seqs.map((s, i) => batcher.submit(job(s, i + 1)));
      await sleep(5);
      assert.equal(batcher.waiting, 20);
      release();
      assert.deepEqual(
        await Promise.all([first, ...rest]),
        Array.from({ length: 21 }, (_, i) => i),
      );
      assert.deepEqual(batches, [["a"], seqs], "no cap and no wait by default");
    },
  );
});
