/**
 * The client package as a user gets it: built and packed (npm pack), installed into an empty folder with nothing else,
 * then used against a running local stack from plain JavaScript, from TypeScript that type-checks under `strict`
 * against the installed declarations, and through its `specgate` command. What the installation pulls in is checked:
 * a gRPC client's dependencies, none of the server's.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { type LocalStack, startLocalStack } from "../../deploy/local-stack.ts";
import { SpecgateClient } from "../../sdk/index.ts";
import { ROOT } from "../support/entry-points.ts";

const run = promisify(execFile);
/** npm and node of the running Node installation first, as the user's shell would have them. */
const ENV = { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ""}` };
const SERVER_PACKAGES = ["onnxruntime-node", "bullmq", "@opentelemetry", "tsx", "ioredis", "specgate"];
const PROMPT = "Once upon a time";
const MAX_TOKENS = 24;

/** Names of every installed package, nested ones included ("@scope/name" or "name"). */
function installedPackages(nodeModules: string): string[] {
  const names: string[] = [];
  for (const entry of readdirSync(nodeModules, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name.startsWith(".")) continue;
    const scoped = entry.name.startsWith("@");
    const dirs = scoped
      ? readdirSync(join(nodeModules, entry.name)).map((name) => `${entry.name}/${name}`)
      : [entry.name];
    for (const name of dirs) {
      names.push(name);
      const nested = join(nodeModules, name, "node_modules");
      if (statSync(nested, { throwIfNoEntry: false })?.isDirectory()) names.push(...installedPackages(nested));
    }
  }
  return names;
}

function folderBytes(dir: string): number {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .reduce((sum, entry) => sum + statSync(join(entry.parentPath, entry.name)).size, 0);
}

const JS_CLIENT = `import { SpecgateClient, SpecgateError } from "@specgate/sdk";

const client = new SpecgateClient({ address: process.argv[2], timeoutMs: 60_000 });
try {
  const input = { prompt: ${JSON.stringify(PROMPT)}, max_tokens: ${MAX_TOKENS}, temperature: 0 };
  const whole = await client.generate(input);
  const streamed = [];
  for await (const event of client.stream(input)) if (event.type === "delta") streamed.push(...event.token_ids);
  let refused;
  try {
    await client.generate({ prompt: "x", max_tokens: 0 });
  } catch (error) {
    refused = error instanceof SpecgateError ? error.codeName : String(error);
  }
  console.log(JSON.stringify({ token_ids: whole.token_ids, text: whole.text, streamed, refused }));
} finally {
  client.close();
}
`;

const TS_CLIENT = `import { type GenerateInput, type GenerateResponse, SpecgateClient, type StreamEvent } from "@specgate/sdk";

const client = new SpecgateClient({ address: process.argv[2], timeoutMs: 60_000, retry: { maxAttempts: 2 } });
try {
  const input: GenerateInput = { prompt: ${JSON.stringify(PROMPT)}, max_tokens: ${MAX_TOKENS}, temperature: 0 };
  const result: GenerateResponse = await client.generate(input);
  const ends: StreamEvent[] = [];
  for await (const event of client.stream(input)) if (event.type === "end") ends.push(event);
  const listing = await client.listModels();
  const drafters: string[] = listing.drafters.map((drafter) => drafter.name);
  const alpha: number | undefined = result.stats?.alpha;
  console.log(JSON.stringify({ token_ids: result.token_ids, drafters, alpha, ends: ends.length }));
} finally {
  client.close();
}
`;

const TS_CONFIG = {
  compilerOptions: {
    strict: true,
    target: "ES2022",
    module: "NodeNext",
    moduleResolution: "NodeNext",
    verbatimModuleSyntax: true,
    erasableSyntaxOnly: true,
    noEmit: true,
    skipLibCheck: false,
    types: ["node"],
  },
  files: ["client.ts"],
};

describe("the client package installed alone", { timeout: 240_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "specgate-sdk-package-"));
  const app = join(work, "app");
  let stack: LocalStack;
  let expected: number[];
  let packed: { filename: string; files: { path: string }[] };

  before(async () => {
    const starting = startLocalStack({
      gatewayPort: 0,
      metricsPorts: "free",
      log: () => {},
      env: { ...process.env, REDIS_URL: undefined },
    });
    // Packing builds the package (its prepack script) while the stack starts.
    const pack = run("npm", ["pack", "--json", "--workspace", "@specgate/sdk", "--pack-destination", work], {
      cwd: ROOT,
      env: ENV,
    });
    stack = await starting;
    [packed] = JSON.parse((await pack).stdout);
    const client = new SpecgateClient({ address: stack.gatewayAddress, timeoutMs: 60_000 });
    try {
      expected = (await client.generate({ prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0 })).token_ids;
    } finally {
      client.close();
    }
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", join(work, packed.filename)], {
      cwd: app,
      env: ENV,
    });
  });

  after(async () => {
    await stack?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("ships compiled JavaScript, declarations and the .proto files it loads, not its TypeScript sources", () => {
    const files = packed.files.map((file) => file.path);
    for (const file of ["dist/index.js", "dist/index.d.ts", "dist/cli.js", "specgate.js", "package.json"]) {
      assert.ok(files.includes(file), file);
    }
    assert.ok(files.includes("dist/gen/proto/specgate/v1/gateway.proto"));
    assert.deepEqual(
      files.filter((file) => file.endsWith(".ts") && !file.endsWith(".d.ts")),
      [],
    );
  });

  it("installs a gRPC client's dependencies and none of the server's", (t) => {
    const packages = installedPackages(join(app, "node_modules"));
    assert.ok(packages.includes("@specgate/sdk") && packages.includes("@grpc/grpc-js"), packages.join(", "));
    const server = packages.filter((name) => SERVER_PACKAGES.some((p) => name === p || name.startsWith(`${p}/`)));
    assert.deepEqual(server, []);
    const megabytes = folderBytes(join(app, "node_modules")) / 1e6;
    t.diagnostic(`node_modules: ${packages.length} packages, ${megabytes.toFixed(1)} MB`);
  });

  it("serves plain JavaScript: a completion, the same one streamed, and a refusal with its gRPC status", async () => {
    writeFileSync(join(app, "client.mjs"), JS_CLIENT);
    const { stdout } = await run(process.execPath, ["client.mjs", stack.gatewayAddress], { cwd: app });
    const printed = JSON.parse(stdout);
    assert.deepEqual(printed.token_ids, expected);
    assert.match(printed.text, /^, there was a little girl named Lily/);
    assert.deepEqual(printed.streamed, expected);
    assert.equal(printed.refused, "INVALID_ARGUMENT");
  });

  it("serves TypeScript that type-checks under strict against the installed declarations", async () => {
    writeFileSync(join(app, "client.ts"), TS_CLIENT);
    writeFileSync(join(app, "tsconfig.json"), JSON.stringify(TS_CONFIG));
    await run(join(ROOT, "node_modules", ".bin", "tsc"), ["-p", "."], { cwd: app }).catch((error) => {
      assert.fail(`tsc: ${error.stdout}${error.stderr}`);
    });
    const { stdout } = await run(process.execPath, ["client.ts", stack.gatewayAddress], { cwd: app });
    const printed = JSON.parse(stdout);
    assert.deepEqual(printed.token_ids, expected);
    assert.ok(printed.drafters.includes("int4"), printed.drafters.join(", "));
    assert.equal(typeof printed.alpha, "number");
    assert.equal(printed.ends, 1);
  });

  it("declares real types: the same program misreading a field's type does not compile", async () => {
    // Declarations typed `any` would pass the check above; this one would then compile.
    writeFileSync(join(app, "wrong.ts"), TS_CLIENT.replace("const alpha: number | undefined", "const alpha: string"));
    const config = { ...TS_CONFIG, files: ["wrong.ts"] };
    writeFileSync(join(app, "tsconfig.wrong.json"), JSON.stringify(config));
    const failure = await run(join(ROOT, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.wrong.json"], {
      cwd: app,
    }).then(
      () => undefined,
      (error) => String(error.stdout),
    );
    assert.match(failure ?? "compiled", /wrong\.ts.*TS2322/);
  });

  it("installs the specgate command, whose client commands call the stack", async () => {
    const bin = join(app, "node_modules", ".bin", "specgate");
    const address = ["--address", stack.gatewayAddress];
    const generated = await run(bin, ["generate", PROMPT, "--max-tokens", String(MAX_TOKENS), "--json", ...address], {
      env: ENV,
    });
    assert.deepEqual(JSON.parse(generated.stdout).token_ids, expected);
    const models = await run(bin, ["models", "--json", ...address], { env: ENV });
    assert.ok(JSON.parse(models.stdout).models.length > 0);
    const up = await run(bin, ["up"], { env: ENV }).then(
      () => undefined,
      (error) => error,
    );
    assert.equal(up?.code, 2);
    assert.match(up.stderr, /npm start/);
  });
});
