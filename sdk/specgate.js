#!/usr/bin/env node
// The `specgate` command. In a checkout it runs the TypeScript CLI through tsx (the server's dependency; no build
// needed); the installed package runs its compiled dist/.
import { existsSync } from "node:fs";

const source = new URL("./cli.ts", import.meta.url);
let cli;
if (existsSync(source)) {
  const { register } = await import("tsx/esm/api");
  register();
  cli = await import(source.href);
} else {
  cli = await import(new URL("./dist/cli.js", import.meta.url).href);
}
process.exitCode = await cli.main(process.argv.slice(2));
