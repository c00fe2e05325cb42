import assert from "node:assert/strict";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { undecodableProblem, withLenientRequests } from "../../gateway/undecodable.ts";
import {
  batchCallProblems,
  InvalidRequestError,
  type ValidationContext,
  validateBatch,
  validateRequest,
} from "../../gateway/validation.ts";
import type { AcceptanceMode } from "../../gen/specgate/v1/AcceptanceMode.ts";
import type { GenerateRequest, GenerateRequest__Output } from "../../gen/specgate/v1/GenerateRequest.ts";
import type { SubmitBatchRequest, SubmitBatchRequest__Output } from "../../gen/specgate/v1/SubmitBatchRequest.ts";
import { messageCodec } from "../../proto/codec.ts";
import { gatewayService } from "../../proto/load.ts";
import { type BatchItemInput, type GenerateInput, toBatchItem, toGenerateRequest } from "../../sdk/request.ts";
import { MODELS_ROOT } from "../../services/runtime/model-files.ts";
import { loadTokenizer } from "../../services/runtime/tokenizer/load.ts";

const codec = messageCodec<GenerateRequest, GenerateRequest__Output>("GenerateRequest");

/** The request exactly as the gateway receives it: built by the SDK, through the wire encoding. */
function received(input: GenerateInput): GenerateRequest__Output {
  return codec.decode(codec.encode(toGenerateRequest(input)));
}

/** A gateway's validation settings for the stories260k model, int4 and n-gram drafters. */
async function storiesContext(): Promise<ValidationContext> {
  const tokenizer = await loadTokenizer(join(MODELS_ROOT, "stories260k"));
  return {
    model: "stories260k",
    contextLength: 512,
    vocabSize: tokenizer.vocabSize,
    encode: (text) => tokenizer.encode(text, { bos: true }),
    drafters: ["int4", "ngram", "lookahead"],
    selfDrafters: new Map([["lookahead", "lookahead"]]),
    defaultDrafter: "int4",
    defaultK: "adaptive",
    maxK: 8,
    defaultMaxTokens: 64,
    maxTokensLimit: 1000,
  };
}

describe("gateway request validation", () => {
  let ctx: ValidationContext;
  before(async () => {
    ctx = await storiesContext();
  });

  const problems = (input: GenerateInput) => problemsOf(received(input));

  function problemsOf(request: GenerateRequest__Output): string {
    try {
      validateRequest(request, ctx, 1);
    } catch (error) {
      assert.ok(error instanceof InvalidRequestError);
      return error.message;
    }
    assert.fail("the request was accepted");
  }

  it("resolves a minimal request with the gateway's defaults", () => {
    const valid = validateRequest(received({ prompt: "Once upon a time" }), ctx, 77);
    assert.equal(valid.prompt[0], 1, "text prompts start with BOS");
    assert.ok(valid.prompt.length > 2);
    assert.equal(valid.maxNewTokens, 64);
    assert.deepEqual(valid.sampling, { temperature: 0, top_k: 0, seed: 77 });
    assert.equal(valid.drafter, "int4");
    assert.deepEqual(valid.kPolicy, { kind: "adaptive", kMin: 0, kMax: 8 });
    assert.equal(valid.acceptance, "ACCEPTANCE_MODE_LOSSLESS");
  });

  it("keeps what the request sets", () => {
    const valid = validateRequest(
      received({
        prompt: [1, 400, 401],
        max_tokens: 5,
        temperature: 0.8,
        top_k: 20,
        top_p: 0.9,
        seed: 5,
        drafter: "ngram",
        k: 3,
        stop: ["."],
        acceptance: "lossy-typical",
        tenant_id: "acme",
      }),
      ctx,
      77,
    );
    assert.deepEqual(valid.prompt, [1, 400, 401]);
    assert.equal(valid.maxNewTokens, 5);
    assert.deepEqual(valid.sampling, { temperature: 0.8, top_k: 20, top_p: 0.9, seed: 5 });
    assert.deepEqual(valid.kPolicy, { kind: "fixed", k: 3 });
    assert.deepEqual(valid.stopStrings, ["."]);
    assert.equal(valid.acceptance, "ACCEPTANCE_MODE_LOSSY_TYPICAL");
    assert.equal(valid.tenantId, "acme");
  });

  it('plain decoding with drafter "none" is K = 0', () => {
    const valid = validateRequest(received({ prompt: "hi", drafter: "none", k: 4 }), ctx, 1);
    assert.deepEqual(valid.kPolicy, { kind: "fixed", k: 0 });
  });

  it("rejects an empty prompt", () => {
    assert.match(problems({ prompt: "" }), /prompt is empty/);
    assert.match(problems({ prompt: [] }), /prompt is empty/);
  });

  it("rejects an unknown drafter and lists the available ones", () => {
    assert.match(
      problems({ prompt: "hi", drafter: "medusa" }),
      /unknown drafter "medusa"; available: int4, ngram, lookahead, none/,
    );
  });

  it("refuses a lossy acceptance rule with a drafter the replicas run, whose rounds are trees", () => {
    assert.match(
      problems({ prompt: "Hi", drafter: "lookahead", acceptance: "lossy-typical" }),
      /drafter "lookahead" drafts token trees, which are verified with lossless acceptance only/,
    );
  });

  it("rejects negative, zero and huge max tokens", () => {
    assert.match(problems({ prompt: "hi", max_tokens: -5 }), /max_tokens must be at least 1, got -5/);
    assert.match(problems({ prompt: "hi", max_tokens: 0 }), /max_tokens must be at least 1, got 0/);
    assert.match(problems({ prompt: "hi", max_tokens: 1_000_000 }), /max_tokens 1000000 exceeds .* limit of 1000/);
  });

  it("rejects temperature < 0 and top_p outside (0, 1]", () => {
    assert.match(problems({ prompt: "hi", temperature: -0.5 }), /temperature must be a finite number >= 0, got -0.5/);
    assert.match(problems({ prompt: "hi", top_p: 0 }), /top_p must be a finite number > 0, got 0/);
    assert.match(problems({ prompt: "hi", top_p: 1.5 }), /top_p must be at most 1, got 1.5/);
    assert.match(problems({ prompt: "hi", top_k: -1 }), /top_k must be at least 0, got -1/);
  });

  it("rejects a prompt longer than the context", () => {
    const long = "Once upon a time there was a cat. ".repeat(100);
    assert.match(problems({ prompt: long }), /prompt is \d+ tokens; the model's context holds 512/);
    assert.match(problems({ prompt: Array(512).fill(5) }), /prompt is 512 tokens/);
  });

  it("rejects token ids outside the vocabulary", () => {
    assert.match(problems({ prompt: [1, 99999] }), /id 99999 is outside the vocabulary \[0, 512\)/);
  });

  it("rejects K beyond the limit and inverted adaptive bounds", () => {
    assert.match(problems({ prompt: "hi", k: 9 }), /fixed_k 9 exceeds .* limit of 8/);
    assert.match(problems({ prompt: "hi", k: "adaptive", k_min: 5, k_max: 3 }), /min_k 5 exceeds max_k 3/);
  });

  it("rejects another model's name, empty stop strings and bad typical-acceptance thresholds", () => {
    assert.match(problems({ prompt: "hi", model: "llama-70b" }), /model "llama-70b" is not served here/);
    assert.match(problems({ prompt: "hi", stop: [""] }), /stop: empty strings are not allowed/);
    assert.match(
      problems({ prompt: "hi", acceptance: "lossy-typical", relaxed_epsilon: -1 }),
      /relaxed.epsilon must be a finite number >= 0/,
    );
  });

  it("rejects an acceptance number the enum does not name (proto3 keeps such numbers)", () => {
    const sent = toGenerateRequest({ prompt: "hi" });
    const acceptance = 9 as AcceptanceMode;
    const request = codec.decode(codec.encode({ ...sent, speculation: { ...sent.speculation, acceptance } }));
    assert.equal(request.speculation?.acceptance, 9, "the number survives the wire");
    assert.match(problemsOf(request), /speculation.acceptance 9 is not a value of AcceptanceMode/);
  });

  it("takes a tree shape, and rejects one out of bounds or with lossy acceptance", () => {
    const tree = { width: 2, nodes: 8 };
    assert.deepEqual(validateRequest(received({ prompt: "Hi", tree }), ctx, 1).tree, { shape: tree, adaptive: false });
    assert.deepEqual(validateRequest(received({ prompt: "Hi", tree: { ...tree, adaptive: true } }), ctx, 1).tree, {
      shape: tree,
      adaptive: true,
    });
    assert.equal(validateRequest(received({ prompt: "Hi" }), ctx, 1).tree, undefined);
    assert.match(
      problems({ prompt: "Hi", tree: { width: 0, nodes: 8 } }),
      /speculation\.tree\.shape\.width must be at least 1, got 0/,
    );
    assert.match(
      problems({ prompt: "Hi", tree: { width: 2, nodes: 64 } }),
      /speculation\.tree\.shape\.nodes must be at most 63, got 64/,
    );
    assert.match(
      problems({ prompt: "Hi", tree, acceptance: "lossy-typical" }),
      /speculation\.tree is verified with lossless acceptance only/,
    );
  });

  it("reports every problem at once", () => {
    const message = problems({ prompt: "", max_tokens: -1, temperature: -1, drafter: "x" });
    for (const part of [/prompt is empty/, /max_tokens/, /temperature/, /unknown drafter/]) assert.match(message, part);
  });
});

describe("gateway request validation, field by field", () => {
  let ctx: ValidationContext;
  before(async () => {
    ctx = await storiesContext();
  });

  /** A valid request changed by `edit`, as the gateway receives it (through the wire encoding). */
  function wire(edit: (request: GenerateRequest) => void): GenerateRequest__Output {
    const request = toGenerateRequest({ prompt: "hi" });
    edit(request);
    return codec.decode(codec.encode(request));
  }
  const sampling = (fields: GenerateRequest["sampling"]) => (r: GenerateRequest) => {
    r.sampling = { ...r.sampling, ...fields };
  };
  const speculation = (fields: GenerateRequest["speculation"]) => (r: GenerateRequest) => {
    r.speculation = { ...r.speculation, ...fields };
  };
  const relaxed = (fields: NonNullable<GenerateRequest["speculation"]>["relaxed"]) =>
    speculation({ acceptance: "ACCEPTANCE_MODE_LOSSY_TYPICAL", relaxed: fields });
  const long = (chars: number) => "x".repeat(chars);

  const rejected: [string, (request: GenerateRequest) => void, RegExp][] = [
    ["max_tokens 0", (r) => (r.max_tokens = 0), /^max_tokens must be at least 1, got 0$/],
    [
      "max_tokens over the limit",
      (r) => (r.max_tokens = 1001),
      /^max_tokens 1001 exceeds this gateway's limit of 1000$/,
    ],
    [
      "temperature NaN",
      sampling({ temperature: Number.NaN }),
      /^sampling.temperature must be a finite number, got NaN$/,
    ],
    ["temperature +inf", sampling({ temperature: Infinity }), /^sampling.temperature must be a finite number, got Inf/],
    ["temperature < 0", sampling({ temperature: -0.5 }), /^sampling.temperature must be a finite number >= 0/],
    ["temperature > 100", sampling({ temperature: 100.5 }), /^sampling.temperature must be at most 100, got 100.5$/],
    ["top_k < 0", sampling({ top_k: -1 }), /^sampling.top_k must be at least 0, got -1$/],
    ["top_p NaN", sampling({ top_p: Number.NaN }), /^sampling.top_p must be a finite number, got NaN$/],
    ["top_p -inf", sampling({ top_p: -Infinity }), /^sampling.top_p must be a finite number, got -Infinity$/],
    ["top_p 0", sampling({ top_p: 0 }), /^sampling.top_p must be a finite number > 0, got 0$/],
    ["top_p > 1", sampling({ top_p: 1.000001 }), /^sampling.top_p must be at most 1, got 1.000001$/],
    ["seed over 2^53 - 1", sampling({ seed: 2 ** 60 }), /^sampling.seed must be at most 9007199254740991/],
    ["fixed_k over the limit", speculation({ fixed_k: 9 }), /^speculation.fixed_k 9 exceeds this gateway's limit/],
    ["adaptive min_k", speculation({ adaptive: { min_k: 9, max_k: 0 } }), /^speculation.adaptive.min_k 9 exceeds/],
    ["adaptive max_k", speculation({ adaptive: { min_k: 0, max_k: 9 } }), /^speculation.adaptive.max_k 9 exceeds/],
    ["relaxed top_k", relaxed({ top_k: 513 }), /^speculation.relaxed.top_k 513 exceeds this gateway's limit of 512$/],
    ["relaxed epsilon NaN", relaxed({ epsilon: Number.NaN }), /^speculation.relaxed.epsilon must be a finite number,/],
    ["relaxed epsilon > 1", relaxed({ epsilon: 1.5 }), /^speculation.relaxed.epsilon must be at most 1, got 1.5$/],
    ["relaxed delta -1", relaxed({ delta: -1 }), /^speculation.relaxed.delta must be a finite number >= 0, got -1$/],
    ["relaxed delta inf", relaxed({ delta: Infinity }), /^speculation.relaxed.delta must be a finite number, got Inf/],
    ["acceptance 9", speculation({ acceptance: 9 as AcceptanceMode }), /^speculation.acceptance 9 is not a value of/],
    ["acceptance -1", speculation({ acceptance: -1 as AcceptanceMode }), /^speculation.acceptance -1 is not a value/],
    ["17 stop strings", (r) => (r.stop = Array(17).fill(".")), /^stop: at most 16 values, got 17$/],
    ["an empty stop string", (r) => (r.stop = [".", ""]), /^stop: empty strings are not allowed$/],
    ["a long stop string", (r) => (r.stop = [long(257)]), /^stop: at most 256 characters, got 257$/],
    ["a long model name", (r) => (r.model = long(257)), /^model: at most 256 characters, got 257;/],
    ["a long drafter name", speculation({ drafter: long(257) }), /^speculation.drafter: at most 256 characters/],
    ["a long request_id", (r) => (r.request_id = long(129)), /^request_id: at most 128 characters, got 129$/],
    ["a long tenant_id", (r) => (r.tenant_id = long(129)), /^tenant_id: at most 128 characters, got 129$/],
    ["a long user_id", (r) => (r.user_id = long(129)), /^user_id: at most 128 characters, got 129$/],
    ["a text too long to tokenize", (r) => (r.text = long(16_385)), /^text: at most 16384 characters \(32 per/],
    ["an id at the vocabulary size", (r) => (r.token_ids = { ids: [1, 512] }), /^token_ids: id 512 is outside/],
  ];
  for (const [what, edit, message] of rejected) {
    it(`rejects ${what}, naming the field`, () => {
      assert.throws(
        () => validateRequest(wire(edit), ctx, 1),
        (error: unknown) => error instanceof InvalidRequestError && message.test(error.message),
      );
    });
  }

  const accepted: [string, (request: GenerateRequest) => void][] = [
    ["max_tokens at the limit", (r) => (r.max_tokens = 1000)],
    ["temperature 100", sampling({ temperature: 100 })],
    ["the smallest positive top_p", sampling({ top_p: Number.MIN_VALUE })],
    ["top_p 1", sampling({ top_p: 1 })],
    ["seed 2^53 - 1", sampling({ seed: Number.MAX_SAFE_INTEGER })],
    ["fixed_k at the limit", speculation({ fixed_k: 8 })],
    ["relaxed top_k at the vocabulary size", relaxed({ top_k: 512 })],
    ["relaxed epsilon 1, delta 0", relaxed({ epsilon: 1, delta: 0 })],
    ["16 stop strings of 256 characters", (r) => (r.stop = Array(16).fill(long(256)))],
    ["labels of 128 characters", (r) => Object.assign(r, { request_id: long(128), tenant_id: long(128) })],
  ];
  for (const [what, edit] of accepted) {
    it(`accepts ${what}`, () => {
      assert.doesNotThrow(() => validateRequest(wire(edit), ctx, 1));
    });
  }

  it("quotes a caller's long value cut short, so that no error message grows with the input", () => {
    const request = wire((r) => (r.model = `${long(200)}!`));
    assert.throws(
      () => validateRequest({ ...request, model: long(250) }, ctx, 1),
      (error: unknown) =>
        error instanceof InvalidRequestError && /^model "x{64}…" is not served here/.test(error.message),
    );
  });

  it("answers a message that did not decode by what the decoder said", () => {
    const lenient = withLenientRequests(gatewayService);
    const garbage = lenient.Generate.requestDeserialize(Buffer.from([0x18, 0xff]));
    assert.match(
      undecodableProblem(garbage as object, "GenerateRequest") ?? "",
      /^the message is not a valid GenerateRequest: /,
    );
    assert.throws(
      () => validateRequest(garbage as GenerateRequest__Output, ctx, 1),
      /the message is not a valid GenerateRequest: /,
    );
    const valid = lenient.Generate.requestDeserialize(Buffer.from(codec.encode(toGenerateRequest({ prompt: "hi" }))));
    assert.equal(undecodableProblem(valid as object, "GenerateRequest"), undefined);
    assert.equal(validateRequest(valid as GenerateRequest__Output, ctx, 1).prompt[0], 1);
  });
});

describe("gateway batch validation", () => {
  let ctx: ValidationContext;
  before(async () => {
    ctx = await storiesContext();
  });
  const batchCodec = messageCodec<SubmitBatchRequest, SubmitBatchRequest__Output>("SubmitBatchRequest");
  const submit = (items: BatchItemInput[], fields: Omit<SubmitBatchRequest, "items"> = {}) =>
    batchCodec.decode(batchCodec.encode({ items: items.map(toBatchItem), ...fields }));

  function batchProblems(request: SubmitBatchRequest__Output, tenant = ""): string {
    try {
      validateBatch(request, tenant, ctx);
    } catch (error) {
      assert.ok(error instanceof InvalidRequestError);
      return error.message;
    }
    assert.fail("the batch was accepted");
  }

  it("resolves a batch: every request labelled with the batch's tenant, the times' defaults", () => {
    const valid = validateBatch(submit([{ custom_id: "a", prompt: "Once" }, { prompt: [1, 2] }]), "acme", ctx);
    assert.deepEqual(
      valid.items.map((item) => [item.customId, item.request.tenant_id]),
      [
        ["a", "acme"],
        ["", "acme"],
      ],
    );
    assert.equal(valid.completionWindowS, 86_400);
    assert.equal(valid.retentionS, 7 * 86_400);
  });

  it("checks every item as Generate does, naming the item", () => {
    const message = batchProblems(
      submit([
        { prompt: "Once", max_tokens: 0 },
        { prompt: "Twice", temperature: Number.NaN },
        { prompt: "Thrice", drafter: "nope" },
      ]),
    );
    assert.match(message, /items\[0\]\.request: max_tokens must be at least 1/);
    assert.match(message, /items\[1\]\.request: sampling\.temperature must be a finite number/);
    assert.match(message, /items\[2\]\.request: unknown drafter "nope"/);
    const acceptance = 99 as unknown as AcceptanceMode;
    const unknownEnum = submit([{ prompt: "Once" }]);
    (unknownEnum.items[0].request as GenerateRequest__Output).speculation = { acceptance } as never;
    assert.match(batchProblems(unknownEnum), /items\[0\]\.request: speculation\.acceptance 99 is not a value/);
  });

  it("checks the batch's own fields", () => {
    assert.match(batchProblems(submit([])), /at least one item/);
    assert.match(
      batchProblems(
        submit([
          { prompt: "a", custom_id: "x" },
          { prompt: "b", custom_id: "x" },
        ]),
      ),
      /items\[1\]\.custom_id "x" is not unique/,
    );
    assert.match(batchProblems(submit([{ prompt: "a", tenant_id: "beta" }]), "acme"), /must be empty or the batch's/);
    assert.match(
      batchProblems(submit([{ prompt: "a" }], { completion_window_s: 8 * 86_400 })),
      /completion_window_s must be at most 604800/,
    );
    assert.match(
      batchProblems(submit([{ prompt: "a" }], { completion_window_s: 60, retention_s: 30 })),
      /retention_s 30 is shorter than the completion window of 60 s/,
    );
    assert.match(batchProblems(submit([{ prompt: "a", custom_id: "x".repeat(129) }])), /items: at most 128 characters/);
  });

  it("lists the first problems of a large bad batch and counts the rest", () => {
    const message = batchProblems(submit(Array.from({ length: 50 }, () => ({ prompt: "a", max_tokens: 0 }))));
    assert.equal(message.split("; ").length, 11);
    assert.match(message, /and 40 more problems$/);
  });

  it("checks the calls that name a batch", () => {
    assert.deepEqual(batchCallProblems({ batch_id: "b", tenant_id: "" }, "GetBatchRequest"), []);
    assert.deepEqual(batchCallProblems({ batch_id: "", tenant_id: "" }, "GetBatchRequest"), [
      "batch_id: empty strings are not allowed",
    ]);
    assert.deepEqual(batchCallProblems({ batch_id: "b", tenant_id: "", limit: 1001 }, "GetBatchResultsRequest"), [
      "limit must be at most 1000, got 1001",
    ]);
    assert.deepEqual(batchCallProblems({ tenant_id: "", limit: 101 }, "ListBatchesRequest"), [
      "limit must be at most 100, got 101",
    ]);
  });
});
