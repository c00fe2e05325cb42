/**
 * `npm run gen:proto`: generates the TypeScript types of the specgate.v1 contracts with proto-loader-gen-types (same
 * conversion options as proto/load.ts), then gives relative imports their `.ts` extension, which this project's ES
 * module resolution requires. Two outputs: gen/ for the servers (every contract), and sdk/gen/ for the client package,
 * which holds the Gateway contract's types and the .proto files it loads at run time, so that the package needs
 * nothing outside its own folder. Skips the work when an output already matches the .proto files, and swaps files in
 * by rename so that concurrent runs (several `npm test` at once) never expose a half-written file.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
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

const ROOT = join(PROTO_ROOT, "..");
const GENERATOR = join(ROOT, "node_modules", ".bin", "proto-loader-gen-types");
const GENERATOR_ARGS = [
  "--keepCase",
  "--longs=Number",
  "--enums=String",
  "--defaults",
  "--oneofs",
  "--includeComments",
];
/** What the SDK loads: the Gateway service and the messages it imports. */
const SDK_PROTO_FILES = ["specgate/v1/common.proto", "specgate/v1/gateway.proto"];

function contractsHash(files: readonly string[]): string {
  const hash = createHash("sha256")
    .update(GENERATOR_ARGS.join(" "))
    .update(readFileSync(import.meta.filename));
  for (const file of files) hash.update(file).update(readFileSync(join(PROTO_ROOT, file)));
  return hash.digest("hex");
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name));
}

/** Types of `files` into `outDir`; with `withProtos`, the .proto files too, under `outDir/proto/`. */
function generate(outDir: string, files: readonly string[], withProtos: boolean): void {
  const stamp = join(outDir, ".stamp");
  const hash = contractsHash(files);
  if (existsSync(stamp) && readFileSync(stamp, "utf8") === hash) return;
  mkdirSync(outDir, { recursive: true });
  const scratch = mkdtempSync(join(outDir, ".tmp-"));
  try {
    execFileSync(GENERATOR, [...GENERATOR_ARGS, "--grpcLib=@grpc/grpc-js", "-I", ".", "-O", scratch, ...files], {
      cwd: PROTO_ROOT,
      stdio: "inherit",
    });
    for (const file of listFiles(scratch)) {
      const source = readFileSync(file, "utf8").replace(/(from '\.{1,2}\/[^']*)'/g, "$1.ts'");
      writeFileSync(`${file}.fixed`, source);
    }
    if (withProtos) {
      for (const file of files) {
        mkdirSync(dirname(join(scratch, "proto", file)), { recursive: true });
        copyFileSync(join(PROTO_ROOT, file), join(scratch, "proto", `${file}.fixed`));
      }
    }
    for (const file of listFiles(scratch).filter((name) => name.endsWith(".fixed"))) {
      const target = join(outDir, relative(scratch, file.slice(0, -".fixed".length)));
      mkdirSync(dirname(target), { recursive: true });
      renameSync(file, target);
    }
    writeFileSync(join(scratch, "stamp"), hash);
    renameSync(join(scratch, "stamp"), stamp);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

generate(join(ROOT, "gen"), PROTO_FILES, false);
generate(join(ROOT, "sdk", "gen"), SDK_PROTO_FILES, true);
