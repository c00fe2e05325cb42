/**
 * Parser of the Prometheus text exposition format (version 0.0.4): what a `/metrics` scrape returns. Used by the tests
 * and by the dashboard check against a live stack.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Scrape {
  samples: Sample[];
  /** Metric family name to its `# TYPE` (counter, gauge, histogram, ...). */
  types: Map<string, string>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;

function parseValue(text: string): number {
  if (text === "+Inf") return Number.POSITIVE_INFINITY;
  if (text === "-Inf") return Number.NEGATIVE_INFINITY;
  if (text === "NaN") return Number.NaN;
  const value = Number(text);
  if (text === "" || Number.isNaN(value)) throw new Error(`not a sample value: ${JSON.stringify(text)}`);
  return value;
}

/** Parses `{a="x",b="y\"z"}` starting at `text[start] === "{"`; returns the labels and the index after `}`. */
function parseLabels(text: string, start: number): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = start + 1;
  while (true) {
    while (text[i] === " " || text[i] === ",") i++;
    if (text[i] === "}") return { labels, end: i + 1 };
    const name = NAME.exec(text.slice(i));
    if (name === null || text[i + name[0].length] !== "=" || text[i + name[0].length + 1] !== '"') {
      throw new Error(`malformed label set in: ${text}`);
    }
    i += name[0].length + 2;
    let value = "";
    while (text[i] !== '"') {
      if (i >= text.length) throw new Error(`unterminated label value in: ${text}`);
      if (text[i] === "\\") {
        const escaped = text[i + 1];
        value += escaped === "n" ? "\n" : escaped;
        i += 2;
      } else {
        value += text[i];
        i++;
      }
    }
    labels[name[0]] = value;
    i++;
  }
}

export function parsePrometheusText(text: string): Scrape {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "") continue;
    if (line.startsWith("#")) {
      const [, keyword, name, type] = line.split(/\s+/);
      if (keyword === "TYPE" && name !== undefined && type !== undefined) types.set(name, type);
      continue;
    }
    const name = NAME.exec(line);
    if (name === null) throw new Error(`malformed sample line: ${line}`);
    let rest = line.slice(name[0].length);
    let labels: Record<string, string> = {};
    if (rest.startsWith("{")) {
      const parsed = parseLabels(rest, 0);
      labels = parsed.labels;
      rest = rest.slice(parsed.end);
    }
    const [value] = rest.trim().split(/\s+/);
    samples.push({ name: name[0], labels, value: parseValue(value ?? "") });
  }
  return { samples, types };
}

/** Sum of the samples of one series name whose labels include all of `match`. */
export function sumSamples(scrape: Scrape, name: string, match: Record<string, string> = {}): number {
  let sum = 0;
  for (const sample of scrape.samples) {
    if (sample.name !== name) continue;
    if (Object.entries(match).every(([key, value]) => sample.labels[key] === value)) sum += sample.value;
  }
  return sum;
}
