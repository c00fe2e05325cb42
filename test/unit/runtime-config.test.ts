import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseDraftConfig, verdictRedis } from "../../services/draft/config.ts";
import { parseRuntimeOptions, sessionOptions } from "../../services/runtime/runtime-config.ts";
import { loadTargetConfig, parseTargetConfig } from "../../services/target/config.ts";

/** The ONNX Runtime session config entries an options object turns into. */
const spinningEntries = (threadSpinning?: "run" | "always" | "off") =>
  sessionOptions(parseRuntimeOptions(threadSpinning ? { threadSpinning } : {})).extra;

describe("runtime options: thread spinning", () => {
  test("by default threads spin only while a run lasts (stopped when it ends)", () => {
    assert.deepEqual(spinningEntries(), {
      session: { intra_op: { allow_spinning: "1" }, force_spinning_stop: "1" },
    });
  });

  test("always keeps ONNX Runtime's own behaviour; off never spins", () => {
    assert.deepEqual(spinningEntries("always"), {
      session: { intra_op: { allow_spinning: "1" }, force_spinning_stop: "0" },
    });
    assert.deepEqual(spinningEntries("off"), {
      session: { intra_op: { allow_spinning: "0" }, force_spinning_stop: "0" },
    });
  });

  test("an unknown mode is refused with the allowed values", () => {
    assert.throws(
      () => parseRuntimeOptions({ threadSpinning: "sometimes" as "run" }),
      /"run"\|"always"\|"off"[\s\S]*threadSpinning/,
    );
  });

  test("the target service reads it from its flag and from SPECGATE_THREAD_SPINNING", () => {
    assert.equal(parseTargetConfig({ replicaId: "r" }).threadSpinning, "run");
    assert.equal(loadTargetConfig(["--thread-spinning", "off"], {})?.threadSpinning, "off");
    assert.equal(loadTargetConfig([], { SPECGATE_THREAD_SPINNING: "always" })?.threadSpinning, "always");
    assert.throws(
      () => loadTargetConfig([], { SPECGATE_THREAD_SPINNING: "fast" }),
      /SPECGATE_THREAD_SPINNING|thread-spinning/,
    );
  });
});

describe("draft service: drafting on verdicts", () => {
  test("is off by default, needs a Redis URL when on, and then listens there", () => {
    assert.equal(verdictRedis(parseDraftConfig({ redisUrl: "redis://r:6379" })), undefined);
    assert.throws(() => verdictRedis(parseDraftConfig({ draftOnVerdict: "true" })), /needs --redis-url/);
    const on = parseDraftConfig({ draftOnVerdict: "true", redisUrl: "redis://r:6379" });
    assert.equal(on.draftOnVerdict, true);
    assert.deepEqual(verdictRedis(on), { url: "redis://r:6379", cluster: false });
    const cluster = parseDraftConfig({ draftOnVerdict: "true", redisUrl: "redis://r:6379", redisCluster: "true" });
    assert.deepEqual(verdictRedis(cluster), { url: "redis://r:6379", cluster: true });
    assert.throws(() => parseDraftConfig({ draftOnVerdict: "yes" }), /draft-on-verdict/);
  });
});
