/**
 * The services run only the serving half of the model code: nothing under gateway/ or services/ (but the builder
 * itself) imports services/model-builder/, type-only imports included, so the offline builder can change freely.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";

const ROOT = resolve(import.meta.dirname, "../..");
const BUILDER = "services/model-builder";
const SERVING = [
  "gateway",
  ...readdirSync(join(ROOT, "services"), { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => `services/${entry.name}`),
].filter((dir) => dir !== BUILDER);

/** `from "x"`, `import "x"` and `import("x")`: every specifier a TypeScript file names. */
const SPECIFIER = /\b(?:from|import)\s*\(?\s*["']([^"']+)["']/g;

function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith(".ts"))
    .map((entry) => relative(ROOT, join(entry.parentPath, entry.name)));
}

describe("serving imports", () => {
  it("never reach services/model-builder/", () => {
    const files = SERVING.flatMap(sourceFiles);
    assert.ok(files.includes("services/runtime/onnx-causal-lm.ts"), "the scan reads the serving runtime");
    const crossings = files.flatMap((file) =>
      [...readFileSync(join(ROOT, file), "utf8").matchAll(SPECIFIER)]
        .map((match) => relative(ROOT, resolve(ROOT, dirname(file), match[1])))
        .filter((target) => target.startsWith(`${BUILDER}/`))
        .map((target) => `${file} -> ${target}`),
    );
    assert.deepEqual(crossings, []);
  });
});
