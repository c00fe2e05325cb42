/**
 * TurnBatch: the first item of a turn leaves at once, the rest of the turn in one bulk call; and `publisher` (one
 * publish, then a pipeline) on a real redis-server delivers every message of a turn, in order.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { publisher, TurnBatch } from "../../services/replica-link/turn-batch.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";

function recordingBatch() {
  const calls: string[][] = [];
  const batch = new TurnBatch<string, string>(
    async (item) => {
      calls.push([item]);
      return `one:${item}`;
    },
    async (items) => {
      calls.push(items);
      return items.map((item) => (item === "bad" ? new Error(`${item} failed`) : `many:${item}`));
    },
  );
  return { calls, batch };
}

describe("TurnBatch", () => {
  it("sends a turn's first item alone and at once, the rest of the turn together, and starts afresh next turn", async () => {
    const { calls, batch } = recordingBatch();
    const first = batch.send("a");
    assert.deepEqual(calls, [["a"]], "the first item must leave before the turn ends");
    const rest = [batch.send("b"), batch.send("c")];
    await Promise.resolve();
    const late = batch.send("d");
    assert.deepEqual(await Promise.all([first, ...rest, late]), ["one:a", "many:b", "many:c", "many:d"]);
    assert.deepEqual(calls, [["a"], ["b", "c", "d"]]);
    assert.equal(await batch.send("e"), "one:e");
    assert.deepEqual(calls.at(-1), ["e"]);
  });

  it("fails only the item the bulk call failed, and every item when the bulk call rejects", async () => {
    const { batch } = recordingBatch();
    void batch.send("a");
    const outcomes = await Promise.allSettled([batch.send("bad"), batch.send("ok")]);
    assert.equal(outcomes[0].status, "rejected");
    assert.deepEqual(outcomes[1], { status: "fulfilled", value: "many:ok" });

    const broken = new TurnBatch<string, string>(
      async (item) => item,
      async () => {
        throw new Error("connection lost");
      },
    );
    void broken.send("a");
    const failed = await Promise.allSettled([broken.send("b"), broken.send("c")]);
    assert.deepEqual(
      failed.map((f) => f.status === "rejected" && (f.reason as Error).message),
      ["connection lost", "connection lost"],
    );
  });
});

describe("publisher", () => {
  let server: RedisServer;
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await server.stop();
  });

  it("delivers every message of a turn, in order, and answers each with its receivers", async () => {
    const subscriber = new Redis(server.url);
    const redis = new Redis(server.url);
    try {
      const received: string[] = [];
      const all = new Promise<void>((resolve) =>
        subscriber.on("messageBuffer", (channel: Buffer, message: Buffer) => {
          received.push(`${channel}=${message}`);
          if (received.length === 5) resolve();
        }),
      );
      await subscriber.subscribe("one", "two");
      const publish = publisher(redis);
      const sent = ["one", "two", "one", "two", "nobody", "one"].map((channel, i) =>
        publish.send({ channel, message: Buffer.from(`m${i}`) }),
      );
      assert.deepEqual(await Promise.all(sent), [1, 1, 1, 1, 0, 1]);
      await all;
      assert.deepEqual(received, ["one=m0", "two=m1", "one=m2", "two=m3", "one=m5"]);
    } finally {
      subscriber.disconnect();
      await redis.quit();
    }
  });
});
