import assert from "node:assert/strict";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { InvalidRequestError, type ValidationContext, validateRequest } from "../../gateway/validation.ts";
import type { AcceptanceMode } from "../../gen/specgate/v1/AcceptanceMode.ts";
import type { GenerateRequest, GenerateRequest__Output } from "../../gen/specgate/v1/GenerateRequest.ts";
import { messageCodec } from "../../proto/codec.ts";
import { type GenerateInput, toGenerateRequest } from "../../sdk/request.ts";
import { MODELS_ROOT } from "../../services/runtime/model-files.ts";
import { loadTokenizer } from "../../services/runtime/tokenizer/load.ts";

const codec = messageCodec<GenerateRequest, GenerateRequest__Output>("GenerateRequest");

/** The request exactly as the gateway receives it: built by the SDK, through the wire encoding. */
function received(input: GenerateInput): GenerateRequest__Output {
  return codec.decode(codec.encode(toGenerateRequest(input)));
}

describe("gateway request validation", () => {
  let ctx: ValidationContext;
  before(async () => {
    const tokenizer = await loadTokenizer(join(MODELS_ROOT, "stories260k"));
    ctx = {
      model: "stories260k",
      contextLength: 512,
      vocabSize: tokenizer.vocabSize,
      encode: (text) => tokenizer.encode(text, { bos: true }),
      drafters: ["int4", "ngram"],
      defaultDrafter: "int4",
      defaultK: "adaptive",
      maxK: 8,
      defaultMaxTokens: 64,
      maxTokensLimit: 1000,
    };
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
      /unknown drafter "medusa"; available: int4, ngram, none/,
    );
  });

  it("rejects negative, zero and huge max tokens", () => {
    assert.match(problems({ prompt: "hi", max_tokens: -5 }), /max_tokens must be at least 1, got -5/);
    assert.match(problems({ prompt: "hi", max_tokens: 0 }), /max_tokens must be at least 1, got 0/);
    assert.match(problems({ prompt: "hi", max_tokens: 1_000_000 }), /max_tokens 1000000 exceeds .* limit of 1000/);
  });

  it("rejects temperature < 0 and top_p outside (0, 1]", () => {
    assert.match(problems({ prompt: "hi", temperature: -0.5 }), /temperature must be a finite number >= 0, got -0.5/);
    assert.match(problems({ prompt: "hi", top_p: 0 }), /top_p must lie in \(0, 1\], got 0/);
    assert.match(problems({ prompt: "hi", top_p: 1.5 }), /top_p must lie in \(0, 1\], got 1.5/);
    assert.match(problems({ prompt: "hi", top_k: -1 }), /top_k must be >= 0, got -1/);
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
    assert.match(problems({ prompt: "hi", stop: [""] }), /empty stop strings/);
    assert.match(
      problems({ prompt: "hi", acceptance: "lossy-typical", relaxed_epsilon: -1 }),
      /relaxed.epsilon must be >= 0/,
    );
  });

  it("rejects an acceptance number the enum does not name (proto3 keeps such numbers)", () => {
    const sent = toGenerateRequest({ prompt: "hi" });
    const acceptance = 9 as AcceptanceMode;
    const request = codec.decode(codec.encode({ ...sent, speculation: { ...sent.speculation, acceptance } }));
    assert.equal(request.speculation?.acceptance, 9, "the number survives the wire");
    assert.match(problemsOf(request), /speculation.acceptance 9 is not an AcceptanceMode/);
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
      /speculation\.tree\.shape\.width must lie in 1\.\.8/,
    );
    assert.match(
      problems({ prompt: "Hi", tree: { width: 2, nodes: 64 } }),
      /speculation\.tree\.shape\.nodes must lie in 1\.\.63/,
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
