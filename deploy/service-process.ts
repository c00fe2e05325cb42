/**
 * One specgate service run as a child process of the local stack: `node --import tsx <entry point>` in its own process
 * group (a terminal's Ctrl-C reaches only the stack, which stops its children in order), its output turned into
 * lines prefixed with its name, and its last lines kept for the error message if it dies.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

export const PROJECT_ROOT = join(import.meta.dirname, "..");

const KEPT_LINES = 20;
const LEVELS: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };
/** pino fields every line has, or that the prefix already says. */
const IMPLIED = new Set(["level", "time", "pid", "hostname", "msg", "name", "service", "replica"]);

/** A pino JSON line as `LEVEL message key=value ...`; other lines unchanged. */
export function formatLogLine(line: string): string {
  if (!line.startsWith("{")) return line;
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line);
  } catch {
    return line;
  }
  const level = LEVELS[Number(record.level)] ?? String(record.level ?? "");
  const fields = Object.entries(record)
    .filter(([key]) => !IMPLIED.has(key))
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`);
  return [level.padEnd(5), String(record.msg ?? ""), ...fields].join(" ");
}

export interface ServiceProcessSpec {
  /** Log prefix and name in messages: "draft", "target-0", "gateway". */
  readonly name: string;
  /** Entry point, relative to the project root. */
  readonly entry: string;
  readonly env: NodeJS.ProcessEnv;
  readonly args?: readonly string[];
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export class ServiceProcess {
  readonly name: string;
  readonly pid: number;
  readonly exited: Promise<Exit>;
  readonly #child: ChildProcess;
  readonly #recent: string[] = [];

  private constructor(name: string, child: ChildProcess, log: (line: string) => void) {
    this.name = name;
    this.#child = child;
    this.pid = child.pid as number;
    this.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) => {
        const text = formatLogLine(line);
        this.#recent.push(text);
        if (this.#recent.length > KEPT_LINES) this.#recent.shift();
        log(`[${name}] ${text}`);
      });
    }
  }

  static async start(spec: ServiceProcessSpec, log: (line: string) => void): Promise<ServiceProcess> {
    const entry = join(PROJECT_ROOT, spec.entry);
    if (!existsSync(entry))
      throw new Error(`${spec.name}: its entry point ${spec.entry} does not exist in this checkout`);
    const child = spawn(process.execPath, ["--import", "tsx", entry, ...(spec.args ?? [])], {
      cwd: PROJECT_ROOT,
      env: spec.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
    return new ServiceProcess(spec.name, child, log);
  }

  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** The last lines it printed (for the message when it dies). */
  recentLines(): readonly string[] {
    return this.#recent;
  }

  /** SIGTERM (the service drains), then SIGKILL if it is still running after `graceMs`. */
  async stop(graceMs: number): Promise<Exit> {
    if (this.running) {
      this.#child.kill("SIGTERM");
      const timer = setTimeout(() => this.kill(), graceMs);
      const exit = await this.exited;
      clearTimeout(timer);
      return exit;
    }
    return this.exited;
  }

  /** Immediate SIGKILL (last resort when the stack itself is exiting). */
  kill(): void {
    if (this.running) this.#child.kill("SIGKILL");
  }
}

export function describeExit(exit: Exit): string {
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}
