/**
 * Just enough of a Dockerfile reader to check a Dockerfile against the repository: instructions per stage, the sources
 * of COPY, and the exec-form commands. Not a linter: it reads the forms specgate's Dockerfile uses and throws on the rest.
 */

export interface Instruction {
  keyword: string;
  /** The text after the keyword, continuation lines joined. */
  args: string;
  line: number;
}

export interface Stage {
  name: string;
  base: string;
  instructions: Instruction[];
}

export interface Copy {
  from: string | undefined;
  sources: string[];
  destination: string;
}

export function parseInstructions(text: string): Instruction[] {
  const lines = text.split("\n");
  const instructions: Instruction[] = [];
  let pending = "";
  let start = 0;
  lines.forEach((raw, index) => {
    const line = raw.trimEnd();
    if (pending === "" && (line.trim() === "" || line.trimStart().startsWith("#"))) return;
    if (pending !== "" && line.trimStart().startsWith("#")) return;
    if (pending === "") start = index + 1;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      return;
    }
    const full = (pending + line).trim();
    pending = "";
    const [keyword] = full.split(/\s+/, 1);
    instructions.push({ keyword: keyword.toUpperCase(), args: full.slice(keyword.length).trim(), line: start });
  });
  if (pending !== "") throw new Error("Dockerfile ends inside a continued line");
  return instructions;
}

/** Splits into stages; a stage is named by `AS name`, else by its index. */
export function parseStages(text: string): Stage[] {
  const stages: Stage[] = [];
  for (const instruction of parseInstructions(text)) {
    if (instruction.keyword === "FROM") {
      const words = instruction.args.split(/\s+/).filter((word) => !word.startsWith("--"));
      const as = words.findIndex((word) => word.toUpperCase() === "AS");
      stages.push({
        name: as >= 0 ? words[as + 1] : String(stages.length),
        base: words[0],
        instructions: [],
      });
    } else if (stages.length > 0) {
      stages.at(-1)?.instructions.push(instruction);
    } else if (instruction.keyword !== "ARG") {
      throw new Error(`line ${instruction.line}: ${instruction.keyword} before the first FROM`);
    }
  }
  return stages;
}

/** The argument vector of an exec-form (JSON array) instruction; shell form throws. */
export function execForm(instruction: Instruction): string[] {
  const body = instruction.keyword === "HEALTHCHECK" ? instruction.args.replace(/^.*?\bCMD\s+/, "") : instruction.args;
  const parsed: unknown = JSON.parse(body);
  if (!Array.isArray(parsed) || !parsed.every((item) => typeof item === "string")) {
    throw new Error(`line ${instruction.line}: ${instruction.keyword} is not in exec form`);
  }
  return parsed;
}

export function parseCopy(instruction: Instruction): Copy {
  const words = instruction.args.split(/\s+/);
  let from: string | undefined;
  const rest: string[] = [];
  for (const word of words) {
    if (word.startsWith("--from=")) from = word.slice("--from=".length);
    else if (!word.startsWith("--")) rest.push(word);
  }
  if (rest.length < 2) throw new Error(`line ${instruction.line}: COPY needs a source and a destination`);
  return { from, sources: rest.slice(0, -1), destination: rest[rest.length - 1] };
}

/** The last value an instruction of this keyword sets in the stage, following the stage's ancestry by name. */
export function inherited(stages: readonly Stage[], stageName: string, keyword: string): Instruction | undefined {
  const stage = stages.find((candidate) => candidate.name === stageName);
  if (stage === undefined) return undefined;
  const own = stage.instructions.filter((instruction) => instruction.keyword === keyword).at(-1);
  return own ?? inherited(stages, stage.base, keyword);
}
