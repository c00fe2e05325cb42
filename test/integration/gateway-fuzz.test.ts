/**
 * The public API fuzzed: over 10,000 requests drawn from a fixed seed against a real gateway (in this process, API keys
 * on) over a real draft service, target replica and redis-server. Field-level values (boundaries, NaN, infinities,
 * wrapped integers, unknown enum numbers, empty and oversized strings and lists, several per request), fields sent with
 * the wrong wire type, byte-level mutations of valid encoded requests, odd metadata and messages just over the size
 * limit, all sent raw through a generic client with an identity serializer, unary and streaming. Every call must end
 * OK or with a client-error status (never INTERNAL, UNKNOWN or a dropped connection); afterwards the gateway is
 * SERVING and greedy output still equals target-only decoding. Accepted requests generate at most 4 tokens, so the
 * run stays within CI's time.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import protobuf from "protobufjs";
import { checkHealth } from "../../deploy/health.ts";
import { parseGatewayConfig } from "../../gateway/config.ts";
import { MAX_REQUEST_BYTES } from "../../gateway/request-limits.ts";
import { loadServedModel } from "../../gateway/served-model.ts";
import { type RunningGateway, startGateway } from "../../gateway/server.ts";
import type { GenerateRequest, GenerateRequest__Output } from "../../gen/specgate/v1/GenerateRequest.ts";
import { messageCodec } from "../../proto/codec.ts";
import { SERVICE_NAMES } from "../../proto/load.ts";
import { apiKeyLine, newApiKey } from "../../sdk/api-key.ts";
import { SpecgateClient } from "../../sdk/index.ts";
import { philox4x32 } from "../../services/engine/rng.ts";
import type { Tokenizer } from "../../services/runtime/tokenizer/tokenizer.ts";
import { inParallel } from "../support/in-parallel.ts";
import { type RedisServer, startRedis } from "../support/redis.ts";
import { type ServiceProcess, spawnService } from "../support/service-process.ts";
import { targetOnlyOutputs } from "../support/target-only.ts";

const SEED = 19;
const MODEL = "stories260k";
const DRAFTERS = "int4=stories260k-int4,ngram";
const TENANT = "fuzz";
/** Calls of each kind; 10,000 in all, and a few over the message size limit. */
const CALLS = { fields: 4_400, wrongTypes: 800, bytes: 4_400, metadata: 300, listModels: 100, oversized: 4 } as const;
const WIDTH = 32;
const CLIENT_ERRORS = new Set<string>([
  "INVALID_ARGUMENT",
  "OUT_OF_RANGE",
  "RESOURCE_EXHAUSTED",
  "NOT_FOUND",
  "UNAUTHENTICATED",
  "PERMISSION_DENIED",
  "FAILED_PRECONDITION",
]);
const silent = pino({ level: "silent" });
const codec = messageCodec<GenerateRequest, GenerateRequest__Output>("GenerateRequest");

/** Uniform draws from the fixed seed (the engine's counter-based generator, one counter per draw). */
class Draws {
  #counter = 0;
  constructor(private readonly seed: number) {}
  u32(): number {
    return philox4x32([this.#counter++, 0, 0, 0], [this.seed, 0])[0];
  }
  below(n: number): number {
    return this.u32() % n;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }
  bytes(length: number): Buffer {
    return Buffer.from(Array.from({ length }, () => this.below(256)));
  }
}

const long = (chars: number, char = "x") => char.repeat(chars);
const NUMBERS = [
  ...[0, 1, 2, 3, 4, 5, 8, 9, -1, 0.5, -0.5, 1e-300, Number.MIN_VALUE, 99.9, 100, 100.5, 1e308, 511, 512],
  ...[Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0],
  ...[2 ** 31 - 1, -(2 ** 31), 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 64],
];
const STRINGS = [
  ...["", " ", "a", ".", "none", "int4", "ngram", MODEL, TENANT, "\u0000", "\ud800", "é🙂", "\n\t"],
  ...[long(128), long(129), long(256), long(257), long(200_000, "y")],
];
const TEXTS = [...STRINGS, "Once upon a time", "🙂", long(600, "once "), long(16_384, "z"), long(16_385, "z")];
const ID_LISTS: number[][] = [
  ...[[], [0], [1], [1, 400, 401], [511], [512], [2 ** 32 - 1], [1, 2 ** 31]],
  ...[Array(510).fill(5), Array(511).fill(5), Array(512).fill(5), Array(100_000).fill(1)],
];
const STOP_LISTS = [
  [],
  [""],
  ["."],
  ["the", ""],
  Array(16).fill(long(256)),
  Array(17).fill("."),
  [long(257)],
  [long(3)],
];
const ACCEPTANCE = [0, 1, 2, 3, 4, 99, -1, 2 ** 31 - 1];

/** Valid, tiny requests: what the mutations start from. */
const BASES: GenerateRequest[] = [
  { text: "Once upon a time", max_tokens: 2 },
  { token_ids: { ids: [1, 400, 401] }, max_tokens: 1, speculation: { drafter: "ngram", fixed_k: 3 } },
  {
    text: "The little dog",
    max_tokens: 1,
    sampling: { temperature: 0.8, top_k: 20, top_p: 0.9, seed: 7 },
    speculation: { drafter: "int4", adaptive: { min_k: 1, max_k: 4 } },
  },
  {
    text: "Lily",
    max_tokens: 1,
    stop: ["."],
    speculation: { acceptance: "ACCEPTANCE_MODE_LOSSY_TYPICAL", relaxed: { epsilon: 0.1, delta: 0.3 } },
  },
  { text: "Ben", max_tokens: 1, speculation: { drafter: "none" }, tenant_id: TENANT, request_id: "r-1", user_id: "u" },
  { text: "a cat", max_tokens: 1, speculation: { acceptance: "ACCEPTANCE_MODE_LOSSY_TOP_K", relaxed: { top_k: 3 } } },
  { text: "Tom", max_tokens: 1, sampling: { temperature: 1 }, speculation: { drafter: "ngram" }, model: MODEL },
];

type Edit = (request: GenerateRequest, draws: Draws) => void;
const sampling = (request: GenerateRequest) => {
  request.sampling ??= {};
  return request.sampling;
};
const speculation = (request: GenerateRequest) => {
  request.speculation ??= {};
  return request.speculation;
};
const relaxed = (request: GenerateRequest) => {
  const settings = speculation(request);
  settings.relaxed ??= {};
  return settings.relaxed;
};

/** One edit per field of GenerateRequest and its messages, each setting a value drawn from that field's set. */
const FIELD_EDITS: readonly Edit[] = [
  (r, d) => {
    delete r.token_ids;
    r.text = d.pick(TEXTS);
  },
  (r, d) => {
    delete r.text;
    r.token_ids = { ids: d.pick(ID_LISTS) };
  },
  (r) => {
    delete r.text;
    delete r.token_ids;
  },
  (r, d) => (r.max_tokens = d.pick(NUMBERS)),
  (r, d) => (sampling(r).temperature = d.pick(NUMBERS)),
  (r, d) => (sampling(r).top_k = d.pick(NUMBERS)),
  (r, d) => (sampling(r).top_p = d.pick(NUMBERS)),
  (r, d) => (sampling(r).seed = d.pick(NUMBERS)),
  (r, d) => (r.stop = d.pick(STOP_LISTS)),
  (r, d) => (speculation(r).drafter = d.pick(STRINGS)),
  (r, d) => {
    delete speculation(r).adaptive;
    speculation(r).fixed_k = d.pick(NUMBERS);
  },
  (r, d) => {
    delete speculation(r).fixed_k;
    speculation(r).adaptive = { min_k: d.pick(NUMBERS), max_k: d.pick(NUMBERS) };
  },
  (r, d) => (speculation(r).acceptance = d.pick(ACCEPTANCE) as never),
  (r, d) => (relaxed(r).top_k = d.pick(NUMBERS)),
  (r, d) => (relaxed(r).epsilon = d.pick(NUMBERS)),
  (r, d) => (relaxed(r).delta = d.pick(NUMBERS)),
  (r, d) => (r.tenant_id = d.pick(STRINGS)),
  (r, d) => (r.user_id = d.pick(STRINGS)),
  (r, d) => (r.model = d.pick(STRINGS)),
  (r, d) => (r.request_id = d.pick(STRINGS)),
];

function base(draws: Draws): GenerateRequest {
  return structuredClone(draws.pick(BASES));
}

/** A valid request with two or three fields set to drawn values (they may be valid too). */
function fieldLevel(draws: Draws): Buffer {
  const request = base(draws);
  for (let edits = 2 + draws.below(2); edits > 0; edits--) draws.pick(FIELD_EDITS)(request, draws);
  return Buffer.from(codec.encode(request));
}

/** Field numbers of GenerateRequest and its messages, unknown ones, and the largest allowed. */
const FIELD_NUMBERS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 99, 2 ** 29 - 1];

/** A field with a wire type the schema does not give it (or an unknown field), top-level or inside a submessage. */
function wrongType(draws: Draws): Buffer {
  const writer = protobuf.Writer.create();
  const wireType = draws.below(6);
  writer.uint32((draws.pick(FIELD_NUMBERS) * 8 + wireType) >>> 0);
  if (wireType === 0) writer.uint64(draws.pick([0, 1, 2 ** 32, 2 ** 53, -1]));
  else if (wireType === 1) writer.double(draws.pick(NUMBERS));
  else if (wireType === 2) writer.bytes(draws.bytes(draws.below(12)));
  else if (wireType === 5) writer.float(draws.pick(NUMBERS));
  let field = Buffer.from(writer.finish());
  const nest = draws.below(4);
  if (nest > 0) {
    const outer = protobuf.Writer.create();
    outer.uint32(([2, 4, 6][nest - 1] * 8 + 2) >>> 0).bytes(field);
    field = Buffer.from(outer.finish());
  }
  const valid = Buffer.from(codec.encode(base(draws)));
  return draws.below(2) === 0 ? Buffer.concat([valid, field]) : Buffer.concat([field, valid]);
}

/** A valid encoded request with two to four byte-level mutations: flips, overwrites, inserts, deletes, cuts. */
function byteLevel(draws: Draws): Buffer {
  let bytes = Buffer.from(codec.encode(base(draws)));
  for (let mutations = 2 + draws.below(3); mutations > 0; mutations--) {
    const at = draws.below(bytes.length + 1);
    switch (draws.below(6)) {
      case 0:
        if (at < bytes.length) bytes[at] ^= 1 << draws.below(8);
        break;
      case 1:
        if (at < bytes.length) bytes[at] = draws.pick([0x00, 0x7f, 0x80, 0xff, draws.below(256)]);
        break;
      case 2:
        bytes = Buffer.concat([bytes.subarray(0, at), draws.bytes(1 + draws.below(8)), bytes.subarray(at)]);
        break;
      case 3:
        bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + draws.below(8))]);
        break;
      case 4:
        bytes = bytes.subarray(0, at);
        break;
      default:
        bytes = Buffer.concat([bytes, bytes.subarray(at)]);
    }
  }
  return bytes;
}

type Kind = keyof typeof CALLS;

interface Call {
  readonly kind: Kind;
  readonly method: "Generate" | "GenerateStream" | "ListModels";
  readonly bytes: Buffer;
  readonly metadata: grpc.Metadata;
}

/** Metadata a client might send: a wrong, repeated or oversized key, odd trace context, large or binary entries. */
function oddMetadata(draws: Draws, key: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  const authorization = [
    `Bearer ${key}`,
    `bearer ${key}`,
    `Bearer ${key} x`,
    "Bearer sg_wrong",
    "Basic Zm9vOmJhcg==",
    "",
    `Bearer ${long(9_000, "k")}`,
  ];
  const choice = draws.below(6);
  if (choice !== 0) metadata.set("authorization", draws.pick(authorization));
  if (choice === 2) metadata.set("traceparent", draws.pick(["00-zz-yy-01", `00-${long(32, "0")}-${long(16, "0")}-01`]));
  // Random base64 does not compress: 40 KB stays below the 64 KiB header block that HTTP/2 itself refuses.
  if (choice === 3) metadata.set("x-junk", draws.bytes(draws.pick([100, 6_000, 7_000, 30_000])).toString("base64"));
  if (choice === 4) for (let i = 0; i < draws.below(100); i++) metadata.set(`x-n${i}`, "v");
  if (choice === 5) metadata.set("x-blob-bin", draws.bytes(draws.below(4_000)));
  return metadata;
}

/** The calls, CALLS of each kind, drawn in order from the seed, kind after kind. */
function drawCalls(draws: Draws, key: string): Call[] {
  const keyed = () => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${key}`);
    return metadata;
  };
  const generate = (bytes: Buffer, metadata = keyed()) => ({
    method: draws.below(4) === 0 ? ("GenerateStream" as const) : ("Generate" as const),
    bytes,
    metadata,
  });
  const draw: Record<Kind, () => Omit<Call, "kind">> = {
    fields: () => generate(fieldLevel(draws)),
    wrongTypes: () => generate(wrongType(draws)),
    bytes: () => generate(byteLevel(draws)),
    metadata: () => generate(fieldLevel(draws), oddMetadata(draws, key)),
    oversized: () => generate(Buffer.from(codec.encode({ text: long(MAX_REQUEST_BYTES - draws.below(3)) }))),
    listModels: () => ({
      method: "ListModels",
      bytes: draws.below(4) === 0 ? Buffer.alloc(0) : byteLevel(draws),
      metadata: keyed(),
    }),
  };
  return Object.entries(CALLS).flatMap(([kind, count]) =>
    Array.from({ length: count }, () => ({ kind: kind as Kind, ...draw[kind as Kind]() })),
  );
}

interface Ending {
  readonly code: string;
  readonly details: string;
}

const identity = (bytes: Buffer) => bytes;

/** Sends the call's bytes as they are and resolves with its status (a stream's after all its messages). */
function send(client: grpc.Client, call: Call): Promise<Ending> {
  const path = `/${SERVICE_NAMES.gateway}/${call.method}`;
  const options = { deadline: Date.now() + 30_000 };
  return new Promise((resolve) => {
    const end = (error: grpc.ServiceError | null | undefined) =>
      resolve({ code: grpc.status[error?.code ?? grpc.status.OK], details: error?.details ?? "" });
    if (call.method === "GenerateStream") {
      const stream = client.makeServerStreamRequest(path, identity, identity, call.bytes, call.metadata, options);
      stream.on("data", () => undefined);
      stream.on("error", end);
      stream.on("status", (status: grpc.StatusObject) => {
        if (status.code === grpc.status.OK) end(null);
      });
    } else {
      client.makeUnaryRequest(path, identity, identity, call.bytes, call.metadata, options, (error) => end(error));
    }
  });
}

describe("gateway fuzzing: every call gets OK or a clean client error", { timeout: 180_000 }, () => {
  let redis: RedisServer;
  let draft: ServiceProcess;
  let target: ServiceProcess;
  let gateway: RunningGateway;
  let tokenizer: Tokenizer;
  const key = newApiKey();

  before(async () => {
    redis = await startRedis();
    draft = spawnService("services/draft/main.ts", ["--port", "0", "--metrics-port", "0"], {
      SPECGATE_DRAFTERS: DRAFTERS,
    });
    // One thread that never spins: the model is tiny, and the replica shares two cores with the test and the draft.
    target = spawnService(
      "services/target/main.ts",
      ["--replica-id", "r0", "--model", MODEL, "--intra-op-threads", "1", "--thread-spinning", "off"],
      { REDIS_URL: redis.url },
    );
    const [listening] = await Promise.all([
      draft.waitForLog((l) => l.msg === "draft service listening"),
      target.waitForLog((l) => l.msg === "target replica serving"),
    ]);
    const served = await loadServedModel(MODEL);
    tokenizer = served.tokenizer;
    gateway = await startGateway({
      config: parseGatewayConfig({
        port: 0,
        redisUrl: redis.url,
        draftAddress: String(listening.address),
        drafters: DRAFTERS,
        maxTokensLimit: 4,
        defaultMaxTokens: 2,
        apiKeys: apiKeyLine(TENANT, key),
      }),
      model: served.model,
      tokenizer,
      logger: silent,
    });
  });

  after(async () => {
    await gateway?.stop(1000);
    await Promise.all([draft?.stop(), target?.stop()]);
    await redis?.stop();
  });

  it(`${Object.values(CALLS).reduce((a: number, b) => a + b, 0)} drawn calls from seed ${SEED}, then SERVING and lossless`, async (t) => {
    const calls = drawCalls(new Draws(SEED), key);
    assert.ok(calls.length >= 10_000);
    const oversized = (call: Call) => call.bytes.length > MAX_REQUEST_BYTES;
    assert.deepEqual(
      calls.filter(oversized).map((call) => call.kind),
      Array(CALLS.oversized).fill("oversized"),
    );
    const client = new grpc.Client(gateway.address, grpc.credentials.createInsecure());
    const started = performance.now();
    let endings: Ending[];
    try {
      endings = await inParallel(calls.length, WIDTH, (i) => send(client, calls[i]));
    } finally {
      client.close();
    }
    const seconds = (performance.now() - started) / 1000;

    const tally = (of: readonly Ending[]) => {
      const counts = new Map<string, number>();
      for (const { code } of of) counts.set(code, (counts.get(code) ?? 0) + 1);
      return counts;
    };
    const summary = (counts: Map<string, number>) =>
      [...counts]
        .sort((a, b) => b[1] - a[1])
        .map(([code, n]) => `${code} ${n}`)
        .join(", ");
    const counts = tally(endings);
    t.diagnostic(`${calls.length} calls in ${seconds.toFixed(1)} s: ${summary(counts)}`);
    for (const kind of Object.keys(CALLS)) {
      t.diagnostic(`  ${kind}: ${summary(tally(endings.filter((_, i) => calls[i].kind === kind)))}`);
    }
    // One example per distinct unclean ending, with the bytes that caused it.
    const unclean = new Map<string, { calls: number; method: string; bytes: string }>();
    endings.forEach(({ code, details }, i) => {
      if (code === "OK" || CLIENT_ERRORS.has(code)) return;
      const what = `${code}: ${details.replace(/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}/g, "<id>")}`;
      const seen = unclean.get(what);
      if (seen) seen.calls++;
      else
        unclean.set(what, {
          calls: 1,
          method: calls[i].method,
          bytes: calls[i].bytes.subarray(0, 100).toString("hex"),
        });
    });
    assert.deepEqual(
      Object.fromEntries([...unclean].slice(0, 5)),
      {},
      `${unclean.size} kinds of calls ended neither OK nor with a client error; the first five are shown`,
    );
    assert.deepEqual(
      endings.filter((_, i) => oversized(calls[i])).map(({ code, details }) => `${code}: ${details}`),
      calls
        .filter(oversized)
        .map(
          (call) =>
            `RESOURCE_EXHAUSTED: Received message larger than max (${call.bytes.length} vs ${MAX_REQUEST_BYTES})`,
        ),
    );
    for (const code of ["OK", "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED"]) {
      assert.ok((counts.get(code) ?? 0) > 0, `some calls end ${code}`);
    }

    const health = await checkHealth(gateway.address, 2000, undefined, SERVICE_NAMES.gateway);
    assert.equal(health.status, "SERVING");
    const prompt = "Once upon a time";
    const [expected] = (await targetOnlyOutputs(MODEL, tokenizer, [prompt], 4)).values();
    const sdk = new SpecgateClient({ address: gateway.address, apiKey: key });
    try {
      for (const drafter of ["int4", "ngram", "none"]) {
        const result = await sdk.generate({ prompt, max_tokens: 4, drafter });
        assert.deepEqual(result.token_ids, expected, `greedy output with drafter ${drafter} after the fuzzing`);
      }
    } finally {
      sdk.close();
    }
  });
});
