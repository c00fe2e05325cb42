/**
 * `npm run gen:proto`: generates the TypeScript types of the specgate.v1 contracts into gen/ with proto-loader-gen-types
 * (same conversion options as proto/load.ts), then gives relative imports their `.ts` extension, which this project's
 * ES module resolution requires. Skips the work when gen/ already matches the .proto files, and swaps files in by
 * rename so that concurrent runs (several `npm test` at once) never expose a half-written file.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative } from "node:path";
import { PROTO_FILES, PROTO_ROOT } from "./load.ts";

const GEN_DIR = join(PROTO_ROOT, "..", "gen");
const STAMP = join(GEN_DIR, ".stamp");
const GENERATOR = join(PROTO_ROOT, "..", "node_modules", ".bin", "proto-loader-gen-types");
const GENERATOR_ARGS = [
  "--keepCase",
  "--longs=Number",
  "--enums=String",
  "--defaults",
  "--oneofs",
  "--includeComments",
];

function contractsHash(): string {
  const hash = createHash("sha256")
    .update(GENERATOR_ARGS.join(" "))
    .update(readFileSync(import.meta.filename));
  for (const file of PROTO_FILES) hash.update(file).update(readFileSync(join(PROTO_ROOT, file)));
  return hash.digest("hex");
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name));
}

const hash = contractsHash();
if (existsSync(STAMP) && readFileSync(STAMP, "utf8") === hash) process.exit(0);

mkdirSync(GEN_DIR, { recursive: true });
const scratch = mkdtempSync(join(GEN_DIR, ".tmp-"));
try {
  execFileSync(GENERATOR, [...GENERATOR_ARGS, "--grpcLib=@grpc/grpc-js", "-I", ".", "-O", scratch, ...PROTO_FILES], {
    cwd: PROTO_ROOT,
    stdio: "inherit",
  });
  for (const file of listFiles(scratch)) {
    const source = readFileSync(file, "utf8").replace(/(from '\.{1,2}\/[^']*)'/g, "$1.ts'");
    const target = join(GEN_DIR, relative(scratch, file));
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(`${file}.fixed`, source);
    renameSync(`${file}.fixed`, target);
  }
  writeFileSync(join(scratch, "stamp"), hash);
  renameSync(join(scratch, "stamp"), STAMP);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
