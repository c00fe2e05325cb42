import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Metadata } from "@grpc/grpc-js";
import { MAX_METADATA_BYTES, metadataBytes, metadataProblem, quoted } from "../../gateway/request-limits.ts";

function metadata(entries: [string, string | Buffer][]): Metadata {
  const result = new Metadata();
  for (const [name, value] of entries) result.add(name, value);
  return result;
}

describe("gateway request limits", () => {
  it("counts every name and every value of the metadata, binary values by their bytes", () => {
    assert.equal(metadataBytes(metadata([])), 0);
    assert.equal(metadataBytes(metadata([["authorization", "Bearer abc"]])), 13 + 10);
    assert.equal(
      metadataBytes(
        metadata([
          ["x-a", "bb"],
          ["x-a", "b"],
        ]),
      ),
      3 + 2 + 3 + 1,
    );
    assert.equal(metadataBytes(metadata([["x-bin", Buffer.alloc(100)]])), 5 + 100);
  });

  it("refuses metadata over the limit, saying its size and the limit", () => {
    const value = (bytes: number) => "a".repeat(bytes - "x-big".length);
    assert.equal(metadataProblem(metadata([["x-big", value(MAX_METADATA_BYTES)]])), undefined);
    assert.equal(
      metadataProblem(metadata([["x-big", value(MAX_METADATA_BYTES + 1)]])),
      `metadata is ${MAX_METADATA_BYTES + 1} bytes; this gateway accepts at most ${MAX_METADATA_BYTES}`,
    );
  });

  it("quotes a value cut to 64 characters", () => {
    assert.equal(quoted("int4"), '"int4"');
    assert.equal(quoted("a".repeat(64)), `"${"a".repeat(64)}"`);
    assert.equal(quoted("a".repeat(65)), `"${"a".repeat(64)}…"`);
    assert.equal(quoted('say "hi"\n'), '"say \\"hi\\"\\n"');
  });
});
