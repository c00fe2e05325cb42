/**
 * The `specgate` command of the client package: generate through a gateway, list its models, make API keys. Starting
 * a stack and benchmarking it belong to the server (`npm start`, `npm run bench` in a checkout), which this package
 * never loads.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { apiKeyLine, newApiKey } from "./api-key.ts";
import { type ClientOptions, DEFAULT_ADDRESS, SpecgateClient } from "./client.ts";
import { SpecgateError } from "./errors.ts";
import type { Batch__Output } from "./gen/specgate/v1/Batch.ts";
import type { GenerateEnd__Output } from "./gen/specgate/v1/GenerateEnd.ts";
import type { GenerateResponse__Output } from "./gen/specgate/v1/GenerateResponse.ts";
import { ACCEPTANCE_NAMES, type AcceptanceName, type BatchItemInput, type GenerateInput } from "./request.ts";

const MAIN_HELP = `specgate: speculative decoding served by a gateway, a draft service and target replicas

Usage: specgate <command> [options]

Commands:
  generate "<prompt>"   generate a completion through a gateway
  models                list the gateway's target model and drafters
  batch <action>        batch jobs: submit FILE.jsonl | status ID | results ID | cancel ID | list
  keygen --tenant NAME  create an API key for a tenant and print its line for the gateway's keys file

Run "specgate <command> --help" for a command's options.`;

/** Commands the server has and this client does not, with what to run instead. */
const SERVER_COMMANDS: Record<string, string> = {
  up: "npm start",
  bench: "npm run bench",
};

const CONNECTION_HELP = `Connection:
  --address HOST:PORT   gateway address (default: $SPECGATE_ADDRESS, else 127.0.0.1:$SPECGATE_PORT, else ${DEFAULT_ADDRESS})
  --timeout MS          deadline of the call in milliseconds (default: none)
  --tls-ca FILE         PEM roots to trust (enables TLS)
  --tls-cert FILE       PEM client certificate (mutual TLS, with --tls-key)
  --tls-key FILE        PEM client key
  --insecure            plaintext even for a non-loopback address (loopback is plaintext by default)
  --api-key KEY         API key of a gateway that requires one (default: $SPECGATE_API_KEY)`;

const GENERATE_HELP = `Usage: specgate generate "<prompt>" [options]

Sampling:
  --max-tokens N        tokens to generate (default: the gateway's)
  --temperature T       0 = greedy (default 0)
  --top-k K             keep the K most probable tokens (0 = off)
  --top-p P             nucleus mass in (0, 1]
  --seed S              seed of every random draw (reported back; reuse it to reproduce a sampled run)
  --stop STRING         stop after this string (repeatable)
Speculation:
  --drafter NAME        drafter ("specgate models" lists them; "none" = plain decoding)
  --k N|adaptive        fixed speculation length N, or the adaptive policy
  --k-min N, --k-max N  bounds of the adaptive policy
  --lookahead W,N,G     Lookahead decoding's window, n-gram size and candidates (drafter of kind lookahead)
  --acceptance MODE     ${ACCEPTANCE_NAMES.join(" | ")} (the lossy-* modes change the output distribution)
  --tenant ID, --user ID  who is asking (labels statistics and metrics)
Output:
  --stream              print text as it is accepted
  --json                print one JSON object: token_ids, text, finish_reason, stats, usage, request_id, seed, model

${CONNECTION_HELP}`;

const MODELS_HELP = `Usage: specgate models [--json]

${CONNECTION_HELP}`;

const BATCH_HELP = `Usage: specgate batch <action> [options]

Batch jobs: many generations run asynchronously by the gateways, below interactive requests in priority; each item's
result is kept (until the batch's retention ends) and written exactly once.
  submit FILE.jsonl     one item per line: {"custom_id": "a", "prompt": "Once upon a time", "max_tokens": 32, ...}
                        (the fields of "specgate generate --json" input: prompt, max_tokens, temperature, top_k, top_p,
                        seed, stop, drafter, k, k_min, k_max, acceptance, ...); prints the batch id ("-": stdin)
  status ID             the batch's status and counts
  results ID            one JSON line per item with a result: index, custom_id, then text, token_ids, finish_reason,
                        usage, or error {code, message}
  cancel ID             items not started are not run
  list                  the tenant's batches, newest first
Options:
  --tenant ID           the tenant asking (a gateway with API keys takes the key's)
  --completion-window S submit: seconds before items not yet run expire (default: the gateway's, 24 h)
  --retention S         submit: seconds the batch and its results are kept (default: the gateway's, 7 days)
  --limit N             list: batches to show (default 20)
  --json                status, submit, cancel, list: the batch(es) as JSON

${CONNECTION_HELP}`;

const KEYGEN_HELP = `Usage: specgate keygen --tenant NAME [--json]

Creates a random API key for the tenant. Prints the key (give it to the client; it is shown once and stored nowhere),
then the line to add to the gateway's API keys file (SPECGATE_API_KEYS_FILE): TENANT:SHA256HEX, the key's hash only.
  --json                print {"tenant", "api_key", "keys_line"}`;

const KEYGEN_OPTIONS = {
  tenant: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const CONNECTION_OPTIONS = {
  address: { type: "string" },
  timeout: { type: "string" },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  insecure: { type: "boolean" },
  "api-key": { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const GENERATE_OPTIONS = {
  ...CONNECTION_OPTIONS,
  "max-tokens": { type: "string" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  seed: { type: "string" },
  stop: { type: "string", multiple: true },
  drafter: { type: "string" },
  k: { type: "string" },
  "k-min": { type: "string" },
  "k-max": { type: "string" },
  lookahead: { type: "string" },
  acceptance: { type: "string" },
  tenant: { type: "string" },
  user: { type: "string" },
  stream: { type: "boolean" },
} as const;

const BATCH_OPTIONS = {
  ...CONNECTION_OPTIONS,
  tenant: { type: "string" },
  "completion-window": { type: "string" },
  retention: { type: "string" },
  limit: { type: "string" },
} as const;

class UsageError extends Error {}

type ConnectionValues = { [K in keyof typeof CONNECTION_OPTIONS]?: string | boolean };

function number(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isFinite(parsed))
    throw new UsageError(`--${name} must be a number, got "${value}"`);
  return parsed;
}

function clientOptions(values: ConnectionValues): ClientOptions {
  const port = process.env.SPECGATE_PORT;
  const address =
    (values.address as string | undefined) ??
    process.env.SPECGATE_ADDRESS ??
    (port ? `127.0.0.1:${port}` : DEFAULT_ADDRESS);
  const file = (path: unknown) => (typeof path === "string" ? readFileSync(path) : undefined);
  const tlsGiven = values["tls-ca"] || values["tls-cert"] || values["tls-key"];
  return {
    address,
    apiKey: (values["api-key"] as string | undefined) || process.env.SPECGATE_API_KEY || undefined,
    timeoutMs: number("timeout", values.timeout as string | undefined),
    tls: values.insecure
      ? false
      : tlsGiven
        ? { ca: file(values["tls-ca"]), cert: file(values["tls-cert"]), key: file(values["tls-key"]) }
        : undefined,
  };
}

/** "FINISH_REASON_CONTEXT_LENGTH" → "context_length". */
function shortFinishReason(reason: string): string {
  return reason.replace(/^FINISH_REASON_/, "").toLowerCase();
}

function jsonResult(tokenIds: number[], text: string, end: GenerateEnd__Output | GenerateResponse__Output): object {
  return {
    token_ids: tokenIds,
    text,
    finish_reason: shortFinishReason(end.finish_reason),
    stats: end.stats,
    usage: end.usage,
    request_id: end.request_id,
    seed: end.seed,
    model: end.model,
  };
}

function summary(end: GenerateEnd__Output | GenerateResponse__Output): string {
  const s = end.stats;
  const figures = s
    ? `rounds=${s.rounds} draft_tokens=${s.draft_tokens} accepted_tokens=${s.accepted_tokens} alpha=${s.alpha.toFixed(3)} tokens_per_round=${s.tokens_per_round.toFixed(2)} drafter=${s.drafter}`
    : "";
  return `[${shortFinishReason(end.finish_reason)}] ${figures} seed=${end.seed}`;
}

function generateInput(prompt: string, values: Record<string, string | boolean | string[] | undefined>): GenerateInput {
  const text = (name: string) => values[name] as string | undefined;
  const k = text("k");
  const acceptance = text("acceptance");
  if (acceptance !== undefined && !ACCEPTANCE_NAMES.includes(acceptance as AcceptanceName)) {
    throw new UsageError(`--acceptance must be one of ${ACCEPTANCE_NAMES.join(", ")}`);
  }
  return {
    prompt,
    max_tokens: number("max-tokens", text("max-tokens")),
    temperature: number("temperature", text("temperature")),
    top_k: number("top-k", text("top-k")),
    top_p: number("top-p", text("top-p")),
    seed: number("seed", text("seed")),
    stop: values.stop as string[] | undefined,
    drafter: text("drafter"),
    k: k === "adaptive" ? "adaptive" : number("k", k),
    k_min: number("k-min", text("k-min")),
    k_max: number("k-max", text("k-max")),
    lookahead: lookaheadOf(text("lookahead")),
    acceptance: acceptance as AcceptanceName | undefined,
    tenant_id: text("tenant"),
    user_id: text("user"),
  };
}

/** `--lookahead 4,3,4`: W, N and G (an empty field keeps the replicas' default). */
function lookaheadOf(text: string | undefined): GenerateInput["lookahead"] {
  if (text === undefined) return undefined;
  const parts = text.split(",");
  if (parts.length !== 3) throw new UsageError(`--lookahead takes W,N,G (for example 4,3,4), got "${text}"`);
  const [window, ngram, candidates] = parts.map((part, i) =>
    part === "" ? undefined : number(`lookahead ${"WNG"[i]}`, part),
  );
  return { window, ngram, candidates };
}

async function generate(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: GENERATE_OPTIONS, allowPositionals: true });
  if (values.help) {
    console.log(GENERATE_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('generate takes exactly one prompt: specgate generate "<prompt>"');
  const input = generateInput(positionals[0], values);
  const client = new SpecgateClient(clientOptions(values));
  const controller = new AbortController();
  const onSigint = () => controller.abort(new Error("interrupted"));
  process.once("SIGINT", onSigint);
  try {
    if (!values.stream) {
      const result = await client.generate(input, { signal: controller.signal });
      if (values.json) console.log(JSON.stringify(jsonResult(result.token_ids, result.text, result)));
      else {
        process.stdout.write(`${result.text}\n`);
        process.stderr.write(`${summary(result)}\n`);
      }
      return 0;
    }
    const tokenIds: number[] = [];
    let text = "";
    for await (const event of client.stream(input, { signal: controller.signal })) {
      if (event.type === "delta") {
        tokenIds.push(...event.token_ids);
        text += event.text;
        if (!values.json) process.stdout.write(event.text);
      } else if (values.json) console.log(JSON.stringify(jsonResult(tokenIds, text, event)));
      else {
        process.stdout.write("\n");
        process.stderr.write(`${summary(event)}\n`);
      }
    }
    return 0;
  } finally {
    process.off("SIGINT", onSigint);
    client.close();
  }
}

async function models(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: CONNECTION_OPTIONS });
  if (values.help) {
    console.log(MODELS_HELP);
    return 0;
  }
  const client = new SpecgateClient(clientOptions(values));
  try {
    const listing = await client.listModels();
    if (values.json) {
      console.log(JSON.stringify(listing));
      return 0;
    }
    for (const m of listing.models) {
      console.log(`model   ${m.name}  vocab=${m.vocab_size} context=${m.context_length}`);
    }
    for (const d of listing.drafters) {
      const mark = d.name === listing.default_drafter ? " (default)" : "";
      console.log(`drafter ${d.name}${mark}  kind=${d.kind}${d.model ? ` model=${d.model}` : ""}`);
    }
    return 0;
  } finally {
    client.close();
  }
}

/** The items of a JSONL file (or stdin for "-"), each line an object with at least a prompt. */
function batchItems(path: string): BatchItemInput[] {
  const text = readFileSync(path === "-" ? 0 : path, "utf8");
  return text.split("\n").flatMap((line, i) => {
    if (line.trim() === "") return [];
    let item: unknown;
    try {
      item = JSON.parse(line);
    } catch (error) {
      throw new UsageError(`${path}:${i + 1}: not JSON: ${(error as Error).message}`);
    }
    if (typeof item !== "object" || item === null || Array.isArray(item) || !("prompt" in item)) {
      throw new UsageError(`${path}:${i + 1}: each line must be a JSON object with a "prompt"`);
    }
    return [item as BatchItemInput];
  });
}

function batchLine(batch: Batch__Output): string {
  const counts = batch.counts;
  const status = batch.status.replace(/^BATCH_STATUS_/, "").toLowerCase();
  return `${batch.id}  ${status}  ${counts?.completed ?? 0}/${counts?.total ?? 0} completed, ${counts?.failed ?? 0} failed`;
}

async function batch(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: BATCH_OPTIONS, allowPositionals: true });
  const [action, argument, ...extra] = positionals;
  if (values.help || action === undefined) {
    console.log(BATCH_HELP);
    return action === undefined && !values.help ? 2 : 0;
  }
  const takes = action === "list" ? 0 : 1;
  if ((takes === 1 && argument === undefined) || positionals.length !== takes + 1 || extra.length > 0) {
    throw new UsageError(
      action === "list"
        ? "batch list takes no argument"
        : `batch ${action} takes one argument: specgate batch ${action} ${action === "submit" ? "FILE.jsonl" : "ID"}`,
    );
  }
  const tenant = { tenant_id: values.tenant };
  const show = (b: Batch__Output) => console.log(values.json ? JSON.stringify(b) : batchLine(b));
  const client = new SpecgateClient(clientOptions(values));
  try {
    switch (action) {
      case "submit": {
        const items = batchItems(argument);
        show(
          await client.submitBatch(items, {
            ...tenant,
            completion_window_s: number("completion-window", values["completion-window"]),
            retention_s: number("retention", values.retention),
          }),
        );
        return 0;
      }
      case "status":
        show(await client.getBatch(argument, tenant));
        return 0;
      case "cancel":
        show(await client.cancelBatch(argument, tenant));
        return 0;
      case "results": {
        let offset = 0;
        do {
          const page = await client.getBatchResults(argument, { ...tenant, offset, limit: 1000 });
          for (const result of page.results) {
            const { index, custom_id, response, error } = result;
            const outcome = response
              ? {
                  text: response.text,
                  token_ids: response.token_ids,
                  finish_reason: shortFinishReason(response.finish_reason),
                  usage: response.usage,
                }
              : { error };
            console.log(JSON.stringify({ index, custom_id, ...outcome }));
          }
          offset = page.next_offset;
        } while (offset !== 0);
        return 0;
      }
      case "list": {
        const listed = await client.listBatches({ ...tenant, limit: number("limit", values.limit) });
        if (values.json) console.log(JSON.stringify(listed.batches));
        else for (const b of listed.batches) show(b);
        return 0;
      }
      default:
        throw new UsageError(`unknown batch action "${action}"\n\n${BATCH_HELP}`);
    }
  } finally {
    client.close();
  }
}

function keygen(argv: string[]): number {
  const { values } = parseArgs({ args: argv, options: KEYGEN_OPTIONS });
  if (values.help) {
    console.log(KEYGEN_HELP);
    return 0;
  }
  if (values.tenant === undefined) throw new UsageError("keygen needs --tenant NAME");
  const key = newApiKey();
  let line: string;
  try {
    line = apiKeyLine(values.tenant, key);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.json) {
    console.log(JSON.stringify({ tenant: values.tenant, api_key: key, keys_line: line }));
    return 0;
  }
  process.stderr.write(`API key of tenant "${values.tenant}" (give it to the client; it is stored nowhere):\n`);
  console.log(key);
  process.stderr.write("Line for the gateway's API keys file (SPECGATE_API_KEYS_FILE):\n");
  console.log(line);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "generate":
        return await generate(rest);
      case "models":
        return await models(rest);
      case "keygen":
        return keygen(rest);
      case "batch":
        return await batch(rest);
      case undefined:
      case "help":
      case "--help":
      case "-h":
        console.log(MAIN_HELP);
        return command === undefined ? 2 : 0;
      default:
        if (Object.hasOwn(SERVER_COMMANDS, command)) {
          throw new UsageError(
            `"specgate ${command}" is the server's, not this client's: run "${SERVER_COMMANDS[command]}" in a specgate checkout`,
          );
        }
        throw new UsageError(`unknown command "${command}"\n\n${MAIN_HELP}`);
    }
  } catch (error) {
    if (error instanceof SpecgateError) {
      console.error(`specgate: ${error.message}`);
      return 1;
    }
    if (error instanceof UsageError || (error as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`specgate: ${(error as Error).message}`);
      return 2;
    }
    throw error;
  }
}

if (process.argv[1] === import.meta.filename) process.exitCode = await main(process.argv.slice(2));
