/**
 * Facts about the processes a container runs, read from the repository: which script an argument vector starts, which
 * files and packages that script loads at run time, which environment variables that code reads, and the
 * configuration the service would build from a given environment. Deployment files are checked against these.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";

export const ROOT = resolve(import.meta.dirname, "../..");

/** The TypeScript script `node --import tsx SCRIPT ...` runs, relative to the repository root. */
export function entryScript(argv: readonly string[]): string | undefined {
  if (argv[0] !== "node") return undefined;
  let i = 1;
  while (i < argv.length && argv[i].startsWith("-")) i += argv[i] === "--import" ? 2 : 1;
  return argv[i];
}

export interface RuntimeImports {
  /** Project files loaded, relative to the root. */
  files: Set<string>;
  /** npm packages loaded (names, not paths). */
  packages: Set<string>;
}

const STATIC_IMPORT = /(?:^|[\s;])(?:import|export)\s+(type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?["']([^"']+)["']/g;
const DYNAMIC_IMPORT = /\bimport\(\s*["']([^"']+)["']\s*\)/g;

function withoutComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
}

/** The specifiers a module's source imports; type-only imports only when `types` is set. */
function importSpecifiers(source: string, types: boolean): string[] {
  const code = withoutComments(source);
  return [
    ...[...code.matchAll(STATIC_IMPORT)].filter((match) => types || match[1] === undefined).map((match) => match[2]),
    ...[...code.matchAll(DYNAMIC_IMPORT)].map((match) => match[1]),
  ];
}

/**
 * The project files each source file under `folder` imports itself, type-only imports included (the compiler needs
 * those files too), as [importer, imported] pairs relative to the root.
 */
export function folderImports(folder: string): [string, string][] {
  const pairs: [string, string][] = [];
  for (const name of readdirSync(join(ROOT, folder), { recursive: true, encoding: "utf8" })) {
    if (!/\.[cm]?[jt]s$/.test(name)) continue;
    const file = join(folder, name);
    for (const specifier of importSpecifiers(readFileSync(join(ROOT, file), "utf8"), true)) {
      if (specifier.startsWith(".")) pairs.push([file, relative(ROOT, resolve(ROOT, dirname(file), specifier))]);
    }
  }
  return pairs;
}

function packageName(specifier: string): string {
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
}

/**
 * Everything `entry` loads when it runs: relative imports followed through the project, bare imports collected.
 * Type-only imports (`import type`, `export type`) are erased and not followed; `import { type X }` is kept, as
 * verbatimModuleSyntax keeps it as a side-effect import.
 */
export function runtimeImports(entry: string): RuntimeImports {
  const files = new Set<string>();
  const packages = new Set<string>();
  const pending = [entry];
  while (pending.length > 0) {
    const file = pending.pop() as string;
    if (files.has(file)) continue;
    const path = join(ROOT, file);
    if (!existsSync(path)) throw new Error(`${file} is imported but does not exist`);
    files.add(file);
    if (!/\.[cm]?[jt]s$/.test(file)) continue;
    for (const specifier of importSpecifiers(readFileSync(path, "utf8"), false)) {
      if (specifier.startsWith(".")) pending.push(relative(ROOT, resolve(dirname(path), specifier)));
      else if (!specifier.startsWith("node:") && !builtinModules.includes(specifier)) {
        packages.add(packageName(specifier));
      }
    }
  }
  return { files, packages };
}

let otelNames: Set<string> | undefined;

/** The OTEL_* variables the installed OpenTelemetry SDK packages read. */
function openTelemetryEnvNames(): Set<string> {
  if (otelNames !== undefined) return otelNames;
  const names = new Set<string>();
  const scan = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) scan(path);
      else if (/\.[cm]?js$/.test(entry.name)) {
        for (const [name] of readFileSync(path, "utf8").matchAll(/\bOTEL_[A-Z0-9_]+/g)) names.add(name);
      }
    }
  };
  scan(join(ROOT, "node_modules", "@opentelemetry"));
  otelNames = names;
  return names;
}

const ENV_READS = [/\benv:\s*"([A-Z][A-Z0-9_]*)"/g, /\benv\.([A-Z][A-Z0-9_]*)/g, /\benv\[\s*"([A-Z][A-Z0-9_]*)"\s*\]/g];

/** Environment variables read by the code `entry` runs: settings tables, `env.NAME` reads, the OpenTelemetry SDK. */
export function envNamesRead(entry: string): Set<string> {
  const { files, packages } = runtimeImports(entry);
  const names = new Set<string>();
  for (const file of files) {
    const source = withoutComments(readFileSync(join(ROOT, file), "utf8"));
    for (const pattern of ENV_READS) for (const [, name] of source.matchAll(pattern)) names.add(name);
  }
  if ([...packages].some((name) => name.startsWith("@opentelemetry/"))) {
    for (const name of openTelemetryEnvNames()) names.add(name);
  }
  return names;
}

interface Setting {
  flag: string;
  env: string;
}

type LoadConfig = (
  settings: Record<string, Setting>,
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  what: string,
) => Record<string, unknown> | undefined;

/**
 * The configuration the service started by `entry` builds from `argv` and `env`, through the service's own settings
 * table (the `*_SETTINGS` export of the config.ts beside the entry) and the shared loader; undefined for scripts
 * without one. Throws what the service would print at start-up when a value is invalid.
 */
export async function serviceConfig(
  entry: string,
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<Record<string, unknown> | undefined> {
  const configFile = join(ROOT, dirname(entry), "config.ts");
  if (!existsSync(configFile)) return undefined;
  const module = (await import(pathToFileURL(configFile).href)) as Record<string, unknown>;
  const tables = Object.entries(module).filter(([name]) => name.endsWith("_SETTINGS"));
  if (tables.length !== 1) throw new Error(`${configFile} should export exactly one *_SETTINGS table`);
  const settingsModule = pathToFileURL(join(ROOT, "services", "config", "settings.ts")).href;
  const { loadConfig } = (await import(settingsModule)) as { loadConfig: LoadConfig };
  return loadConfig(tables[0][1] as Record<string, Setting>, argv, env, entry);
}
