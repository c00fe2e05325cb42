/**
 * The LRU under a byte cap, over a fake store of byte counts: which entries making room evicts, in which order, and
 * when it stops.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ByteCappedLru } from "../../services/caching/byte-capped-lru.ts";

/** Entries whose value is the bytes they hold; evicting deletes the entry unless `keep`. */
function store(capacityBytes: number, options: { keep?: boolean; otherBytes?: () => number } = {}) {
  const evicted: string[] = [];
  const held = new Map<string, number>();
  const lru: ByteCappedLru<string, string> = new ByteCappedLru({
    capacityBytes,
    usedBytes: () => [...held.values()].reduce((sum, bytes) => sum + bytes, 0) + (options.otherBytes?.() ?? 0),
    bytesOf: (key) => held.get(key) ?? 0,
    evict: (key, value, bytes) => {
      assert.equal(bytes, held.get(key));
      evicted.push(`${key}=${value}`);
      held.delete(key);
      if (!options.keep) lru.delete(key);
    },
  });
  const put = (key: string, bytes: number) => {
    held.set(key, bytes);
    lru.set(key, key.toUpperCase());
  };
  return { lru, held, evicted, put };
}

describe("ByteCappedLru", () => {
  test("evicts nothing while the bytes fit", () => {
    const { lru, put } = store(100);
    put("a", 40);
    put("b", 40);
    assert.deepEqual(lru.makeRoom(20), []);
    assert.equal(lru.evictions, 0);
    assert.equal(lru.size, 2);
  });

  test("evicts the least recently used first, and no more than needed", () => {
    const { lru, evicted, put } = store(100);
    put("a", 30);
    put("b", 30);
    put("c", 30);
    lru.set("a", "A");
    assert.deepEqual(lru.makeRoom(50), ["b", "c"]);
    assert.deepEqual(evicted, ["b=B", "c=C"]);
    assert.deepEqual([...lru.values()], ["A"]);
    assert.equal(lru.evictions, 2);
  });

  test("get leaves the order as it is", () => {
    const { lru, put } = store(100);
    put("a", 50);
    put("b", 50);
    assert.equal(lru.get("a"), "A");
    assert.equal(lru.get("z"), undefined);
    assert.deepEqual(lru.makeRoom(1), ["a"]);
  });

  test("skips busy entries and entries that hold nothing; evicts what it can when the bytes cannot fit", () => {
    const { lru, put } = store(100);
    put("empty", 0);
    put("busy", 50);
    put("a", 20);
    put("b", 30);
    assert.deepEqual(
      lru.makeRoom(90, (key) => key === "busy"),
      ["a", "b"],
    );
    assert.equal(lru.fits(90), false);
    assert.deepEqual([...lru.values()], ["EMPTY", "BUSY"]);
  });

  test("counts bytes that are not entries' against the cap, and keeps entries its owner keeps", () => {
    let reserved = 60;
    const { lru, held, put } = store(100, { keep: true, otherBytes: () => reserved });
    put("a", 20);
    put("b", 20);
    assert.deepEqual(lru.makeRoom(10), ["a"]);
    assert.equal(lru.size, 2, "the owner kept the entry");
    assert.equal(held.has("a"), false);
    reserved = 0;
    assert.deepEqual(lru.makeRoom(10), []);
  });
});
