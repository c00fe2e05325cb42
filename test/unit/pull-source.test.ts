import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { resolveSource } from "../../services/model-builder/pull-source.ts";

const HUB = "http://hub.test/";

describe("resolveSource", () => {
  it("takes an http(s) URL as it is, naming the file after its last segment", () => {
    assert.deepEqual(resolveSource("https://example.test/ckpt/stories15M.bin?download=1", HUB), {
      url: "https://example.test/ckpt/stories15M.bin?download=1",
      fileName: "stories15M.bin",
    });
    assert.throws(() => resolveSource("http://example.test/dir/", HUB), /does not end with a file name/);
  });

  it("resolves owner/repo/path against the hub, revision main by default", () => {
    assert.deepEqual(resolveSource("karpathy/tinyllamas/stories15M.bin", HUB), {
      url: "http://hub.test/karpathy/tinyllamas/resolve/main/stories15M.bin",
      fileName: "stories15M.bin",
    });
    assert.equal(
      resolveSource("org/model/onnx/model q4.onnx", HUB).url,
      "http://hub.test/org/model/resolve/main/onnx/model%20q4.onnx",
    );
  });

  it("accepts the revision after the repository or after the file", () => {
    assert.equal(resolveSource("o/r@v2/a/b.json", HUB).url, "http://hub.test/o/r/resolve/v2/a/b.json");
    assert.equal(resolveSource("o/r/a/b.json@v2", HUB).url, "http://hub.test/o/r/resolve/v2/a/b.json");
    assert.equal(resolveSource("o/r@v2/a/b.json", HUB).fileName, "b.json");
    assert.throws(() => resolveSource("o/r@v1/a/b.json@v2", HUB), /give the revision once/);
  });

  it("rejects what is neither a URL nor owner/repo/file", () => {
    assert.throws(() => resolveSource("models/stories.bin", HUB), /expected an http\(s\) URL or a hub file/);
    assert.throws(() => resolveSource("o//file", HUB), /expected an http\(s\) URL or a hub file/);
  });
});
