/**
 * The distributed benchmark's hop floor (bench/hop-floor.ts) on a real redis-server: its echo process answers through
 * Redis, over a gRPC stream and over TCP, the echo's work is taken out of each trip, and nothing is left running.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { hopFloor } from "../../bench/hop-floor.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";

let redis: RedisServer;

before(async () => {
  redis = await startRedis();
});

after(async () => {
  await redis.stop();
});

describe("hop floor", () => {
  it("measures both hop shapes without the echo's work and sums their medians", async () => {
    const floor = await hopFloor(redis.url, 30, 30, 10);
    assert.equal(floor.rounds, 10);
    assert.equal(floor.target_step_ms, 30);
    assert.equal(floor.draft_ms, 30);
    for (const hops of [floor.verify_hops_ms_p50, floor.proposal_hops_ms_p50, floor.proposal_tcp_hops_ms_p50]) {
      // Positive, and well below the echo's 30 ms of work in each trip, which the figures exclude.
      assert.ok(hops > 0 && hops < 15, `hops of ${hops} ms`);
    }
    assert.ok(Math.abs(floor.floor_ms_p50 - (floor.verify_hops_ms_p50 + floor.proposal_hops_ms_p50)) < 0.002);
    assert.equal(await clientsLeft(redis.url), 0, "the echo's and the measurement's connections are closed");
  });
});

/** Clients of the server besides the one asking, once the server has seen the others' sockets close (up to 2 s). */
async function clientsLeft(url: string): Promise<number> {
  const probe = new Redis(url);
  try {
    let others = Number.POSITIVE_INFINITY;
    for (let attempt = 0; attempt < 100 && others > 0; attempt++) {
      if (attempt > 0) await sleep(20);
      others = ((await probe.client("LIST")) as string).trim().split("\n").length - 1;
    }
    return others;
  } finally {
    await probe.quit();
  }
}
