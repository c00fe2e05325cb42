/**
 * One way to configure a service: every setting has a command-line flag and an environment variable (the flag wins),
 * a zod schema with its default, and a line of help. Validated at start-up; `--help` prints the table.
 */
import { parseArgs } from "node:util";
import { z } from "zod";

export interface Setting {
  readonly flag: string;
  readonly env: string;
  readonly schema: z.ZodType;
  readonly help: string;
}

export type Settings = Record<string, Setting>;

/** A whole number of at least `min`, `fallback` when unset (flags and variables arrive as text). */
export const integer = (min: number, fallback: number) => z.coerce.number().int().min(min).default(fallback);

/** A TCP port; 0 asks for a free one. */
export const port = (fallback: number) => integer(0, fallback).pipe(z.number().max(65535));

/** The parsed configuration of a settings table: each key typed by its schema's output. */
export type ConfigOf<S extends Settings> = { [K in keyof S]: z.output<S[K]["schema"]> };

/** Validates a configuration given as an object (tests, embedding), filling in the defaults. */
export function parseConfig<S extends Settings>(
  settings: S,
  input: Record<string, unknown>,
  what: string,
): ConfigOf<S> {
  const schema = z.object(Object.fromEntries(Object.entries(settings).map(([key, s]) => [key, s.schema])));
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const setting = settings[String(issue.path[0])];
      const name = setting ? `--${setting.flag} / $${setting.env}` : String(issue.path[0]);
      return `  ${name}: ${issue.message}`;
    });
    throw new TypeError(`invalid ${what} configuration:\n${problems.join("\n")}`);
  }
  return parsed.data as ConfigOf<S>;
}

/** The configuration from flags over environment variables; undefined when `--help` was asked for. */
export function loadConfig<S extends Settings>(
  settings: S,
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  what: string,
): ConfigOf<S> | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      help: { type: "boolean", short: "h" },
      ...Object.fromEntries(Object.values(settings).map((s) => [s.flag, { type: "string" as const }])),
    },
    strict: true,
  });
  if (values.help) return undefined;
  const input: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(settings)) {
    const value = (values as Record<string, unknown>)[setting.flag] ?? env[setting.env];
    if (value !== undefined && value !== "") input[key] = value;
  }
  return parseConfig(settings, input, what);
}

function defaultOf(schema: z.ZodType): string {
  const parsed = schema.safeParse(undefined);
  return parsed.success && parsed.data !== undefined ? ` (default ${String(parsed.data)})` : "";
}

/** The `--help` text: a title, a usage line, then every setting with its flag, variable, meaning and default. */
export function settingsHelp(settings: Settings, title: string, usage: string): string {
  const lines = Object.values(settings).map(
    (s) => `  --${s.flag.padEnd(22)} $${s.env.padEnd(30)} ${s.help}${defaultOf(s.schema)}`,
  );
  return [
    title,
    "",
    `usage: ${usage}`,
    "",
    `  ${"flag".padEnd(24)} ${"environment variable".padEnd(31)} meaning`,
    ...lines,
    "  --help, -h               print this help",
    "",
  ].join("\n");
}
