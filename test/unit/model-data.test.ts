import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { MODEL_DATA_DIR } from "../support/model-data.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

describe("the model data the repository carries", () => {
  it("holds the files its provenance lists, with the checksums it gives, and their licence", () => {
    const provenance = readFileSync(join(MODEL_DATA_DIR, "PROVENANCE.md"), "utf8");
    const rows = [...provenance.matchAll(/^\| (\S+\.bin) \| (\d+) \| ([0-9a-f]{64}) \|/gm)];
    assert.deepEqual(rows.map((row) => row[1]).sort(), ["stories260K.bin", "stories260K.v1.bin", "tok512.bin"]);
    for (const [, name, bytes, sha256] of rows) {
      const data = readFileSync(join(MODEL_DATA_DIR, name));
      assert.equal(data.length, Number(bytes), name);
      assert.equal(createHash("sha256").update(data).digest("hex"), sha256, name);
    }
    assert.match(readFileSync(join(MODEL_DATA_DIR, "LICENSE"), "utf8"), /^MIT License/);
  });

  it("is the only model data the tracked files point at: none reaches outside the repository", () => {
    const tracked = execFileSync("git", ["ls-files"], { cwd: ROOT, encoding: "utf8" }).split("\n");
    const text = tracked.filter((file) => /\.(ts|js|json|ya?ml|md|sh)$|Dockerfile$|^\.ci\//.test(file));
    const outside = text.filter((file) => /\.\.\/shared\//.test(readFileSync(join(ROOT, file), "utf8")));
    assert.deepEqual(outside, []);
  });
});
