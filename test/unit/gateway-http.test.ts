/**
 * The HTTP API's pure parts: OpenAI bodies → GenerateRequest (and what is refused, naming the field), the response
 * and chunk shapes with their speculation statistics, the mapping of gRPC statuses onto HTTP ones, and where a chat
 * template comes from (a file, tokenizer_config.json, the built-in stories260K one, or none).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import { Aborted } from "../../gateway/call-abort.ts";
import { loadChatTemplate } from "../../gateway/http/chat-template.ts";
import { HttpError, httpFailure } from "../../gateway/http/errors.ts";
import { chatRequest, completionRequest } from "../../gateway/http/openai-request.ts";
import { ChunkWriter, completionBody, responseHead, speculationSummary } from "../../gateway/http/responses.ts";
import type { Served } from "../../gateway/requests.ts";
import { InvalidRequestError } from "../../gateway/validation.ts";
import type { SpeculationStats__Output } from "../../gen/specgate/v1/SpeculationStats.ts";

/** The HttpError `make` throws. */
function refusal(make: () => unknown): HttpError {
  try {
    make();
  } catch (error) {
    assert.ok(error instanceof HttpError, String(error));
    return error;
  }
  return assert.fail("expected an HttpError");
}

const STATS = {
  rounds: 4,
  generated_tokens: 10,
  draft_tokens: 12,
  accepted_tokens: 6,
  alpha: 0.5,
  drafter: "int4",
} as SpeculationStats__Output;

const SERVED: Served = {
  outcome: {
    tokenIds: [5, 6, 7],
    text: " a b",
    finishReason: "FINISH_REASON_EOS",
    stats: STATS,
    promptTokens: 4,
  },
  requestId: "r1",
  seed: 9,
};

describe("OpenAI request bodies → GenerateRequest", () => {
  it("maps a completion's fields, text or token ids, and the speculation extension", () => {
    const parsed = completionRequest({
      model: "stories260k",
      prompt: "Once",
      max_tokens: 8,
      temperature: 0.7,
      top_p: 0.9,
      top_k: 20,
      seed: 3,
      stop: "\n",
      user: "u",
      n: 1,
      logprobs: null,
      stream: true,
      stream_options: { include_usage: true },
      speculation: { drafter: "ngram", k: 3 },
      return_token_ids: true,
    });
    assert.deepEqual(parsed.generate, {
      max_tokens: 8,
      sampling: { temperature: 0.7, top_k: 20, top_p: 0.9, seed: 3 },
      stop: ["\n"],
      speculation: {
        drafter: "ngram",
        acceptance: "ACCEPTANCE_MODE_UNSPECIFIED",
        relaxed: null,
        tree: null,
        lookahead: null,
        length: "fixed_k",
        fixed_k: 3,
      },
      tenant_id: "",
      user_id: "u",
      model: "stories260k",
      request_id: "",
      prompt: "text",
      text: "Once",
    });
    assert.deepEqual([parsed.stream, parsed.includeUsage, parsed.returnTokenIds], [true, true, true]);
    const ids = completionRequest({ prompt: [1, 2, 3], speculation: { k: "adaptive" } }).generate;
    assert.equal(ids.prompt, "token_ids");
    assert.deepEqual(ids.token_ids, { ids: [1, 2, 3] });
    assert.equal(ids.speculation?.length, "adaptive");
    assert.deepEqual(ids.sampling, { temperature: 0, top_k: 0 }, "greedy unless asked");
    assert.equal(ids.max_tokens, undefined, "the gateway's default");
    const tree = completionRequest({
      prompt: "x",
      speculation: { k: 3, tree: { width: 2, nodes: 6, adaptive: true } },
    });
    assert.deepEqual(tree.generate.speculation?.tree, { shape: { width: 2, nodes: 6 }, adaptive: true });
    // Sizes left out read as 0, for the gateway's validation to refuse with its ranges, as over gRPC.
    assert.deepEqual(completionRequest({ prompt: "x", speculation: { tree: {} } }).generate.speculation?.tree, {
      shape: { width: 0, nodes: 0 },
      adaptive: false,
    });
    const lookahead = completionRequest({
      prompt: "x",
      speculation: { drafter: "lookahead", lookahead: { window: 6 } },
    });
    assert.deepEqual(lookahead.generate.speculation?.lookahead, { window: 6, ngram: 0, candidates: 0 });
  });

  it("refuses what it does not serve, naming the field", () => {
    const cases: [unknown, string, RegExp][] = [
      [{ prompt: "x", n: 2 }, "n", /one choice/],
      [{ prompt: "x", logprobs: 1 }, "logprobs", /log-probabilities/],
      [{ prompt: "x", echo: true }, "echo", /echo/],
      [{ prompt: "x", best_of: 3 }, "best_of", /one choice/],
      [{ prompt: "x", presence_penalty: 0.5 }, "presence_penalty", /penalties/],
      [{ prompt: "x", logit_bias: { 1: 5 } }, "logit_bias", /logit biases/],
      [{ prompt: "x", functions: [] }, "functions", /unknown field/],
      [{ prompt: ["a", "b"] }, "prompt", /one prompt per request/],
      [{}, "prompt", /required/],
      [{ prompt: "x", max_tokens: 1.5 }, "max_tokens", /integer/],
      [{ prompt: "x", temperature: "hot" }, "temperature", /number/],
      [{ prompt: "x", stop: [1] }, "stop", /strings/],
      [{ prompt: "x", stream: "yes" }, "stream", /true or false/],
      [{ prompt: "x", stream_options: { include_usage: true } }, "stream_options", /only allowed when stream/],
      [{ prompt: "x", speculation: { k: -1 } }, "speculation.k", /integer >= 0/],
      [
        { prompt: "x", speculation: { k: 3, depth: 2 } },
        "speculation.depth",
        /unknown field.*known: drafter, k, tree, lookahead/,
      ],
      [{ prompt: "x", speculation: { lookahead: { w: 4 } } }, "speculation.lookahead.w", /unknown field/],
      [{ prompt: "x", speculation: { lookahead: 4 } }, "speculation.lookahead", /must be an object/],
      [{ prompt: "x", speculation: { tree: true } }, "speculation.tree", /must be an object/],
      [{ prompt: "x", speculation: { tree: { width: "2" } } }, "speculation.tree.width", /must be a number/],
      [{ prompt: "x", speculation: { tree: { adaptive: 1 } } }, "speculation.tree.adaptive", /true or false/],
      [{ prompt: "x", speculation: { tree: { shape: {} } } }, "speculation.tree.shape", /unknown field/],
    ];
    for (const [body, param, message] of cases) {
      const error = refusal(() => completionRequest(body));
      assert.equal(error.status, 400, JSON.stringify(body));
      assert.equal(error.param, param, JSON.stringify(body));
      assert.match(error.message, message);
    }
    assert.equal(refusal(() => completionRequest([1])).code, "invalid_json");
    // null is "absent", as in OpenAI's API; the values that mean "off" are accepted.
    assert.doesNotThrow(() =>
      completionRequest({ prompt: "x", n: null, echo: false, logit_bias: {}, presence_penalty: 0, max_tokens: null }),
    );
  });

  it("maps chat messages (text parts joined) and max_completion_tokens; refuses other roles and tool calls", () => {
    const parsed = chatRequest({
      messages: [
        { role: "system", content: "Be brief." },
        {
          role: "user",
          name: "ann",
          content: [
            { type: "text", text: "Once " },
            { type: "text", text: "upon" },
          ],
        },
      ],
      max_completion_tokens: 5,
      logprobs: false,
    });
    assert.deepEqual(parsed.messages, [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Once upon", name: "ann" },
    ]);
    assert.equal(parsed.generate.max_tokens, 5);
    const cases: [unknown, string][] = [
      [{ messages: [] }, "messages"],
      [{ messages: [{ role: "tool", content: "x" }] }, "messages[0].role"],
      [{ messages: [{ role: "assistant", content: null, tool_calls: [] }] }, "messages[0].tool_calls"],
      [{ messages: [{ role: "user", content: [{ type: "image_url" }] }] }, "messages[0].content[0]"],
      [{ messages: [{ role: "user", content: "x" }], logprobs: true }, "logprobs"],
      [{ messages: [{ role: "user", content: "x" }], prompt: "x" }, "prompt"],
    ];
    for (const [body, param] of cases) assert.equal(refusal(() => chatRequest(body)).param, param);
  });
});

describe("response bodies", () => {
  it("speculation statistics: accept_rate is accepted / drafted, accept_length 1 + accepted / rounds", () => {
    assert.deepEqual(speculationSummary(STATS), {
      drafter: "int4",
      rounds: 4,
      draft_tokens: 12,
      accepted_tokens: 6,
      accept_rate: 0.5,
      accept_length: 2.5,
    });
    assert.equal(speculationSummary({ ...STATS, rounds: 0 }).accept_length, 0);
  });

  it("whole completions in OpenAI's shapes, the finish reason mapped, usage and speculation beside", () => {
    const body = completionBody(responseHead("completion", "r1", "m"), SERVED, false);
    assert.equal(body.id, "cmpl-r1");
    assert.equal(body.object, "text_completion");
    assert.deepEqual(body.choices, [{ index: 0, text: " a b", logprobs: null, finish_reason: "stop" }]);
    assert.deepEqual(body.usage, { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 });
    assert.equal(body.speculation.accept_rate, 0.5);
    const chat = completionBody(responseHead("chat", "r1", "m"), SERVED, true);
    assert.equal(chat.id, "chatcmpl-r1");
    assert.equal(chat.object, "chat.completion");
    assert.deepEqual(chat.choices[0], {
      index: 0,
      message: { role: "assistant", content: " a b" },
      logprobs: null,
      token_ids: [5, 6, 7],
      finish_reason: "stop",
    });
    const length = { ...SERVED, outcome: { ...SERVED.outcome, finishReason: "FINISH_REASON_CONTEXT_LENGTH" as const } };
    assert.equal(completionBody(responseHead("chat", "r", "m"), length, false).choices[0].finish_reason, "length");
  });

  it("stream chunks: the role first (chat), deltas, the finish chunk with speculation, the usage chunk last", () => {
    const chat = new ChunkWriter(responseHead("chat", "r1", "m"), true, false);
    assert.deepEqual(chat.first()?.choices, [
      { index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
    ]);
    const text = chat.text({ token_ids: [5], text: " a", round: 1 });
    assert.equal(text.object, "chat.completion.chunk");
    assert.deepEqual(text.choices, [{ index: 0, delta: { content: " a" }, logprobs: null, finish_reason: null }]);
    assert.equal(text.usage, null);
    const last = chat.last(SERVED);
    assert.deepEqual(last.choices, [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }]);
    assert.equal(last.speculation.drafter, "int4");
    assert.deepEqual(chat.usage(SERVED)?.choices, []);
    assert.equal(chat.usage(SERVED)?.usage?.total_tokens, 7);

    const completion = new ChunkWriter(responseHead("completion", "r1", "m"), false, true);
    assert.equal(completion.first(), undefined);
    const delta = completion.text({ token_ids: [5], text: " a", round: 1 });
    assert.deepEqual(delta.choices, [{ index: 0, text: " a", logprobs: null, finish_reason: null, token_ids: [5] }]);
    assert.equal("usage" in delta, false, "no usage field unless stream_options.include_usage");
    assert.equal(completion.usage(SERVED), undefined);
  });
});

describe("errors", () => {
  it("maps each gRPC status a request ends with onto its HTTP status, with Retry-After for load and drain", () => {
    const cases: [unknown, number, string, boolean][] = [
      [new InvalidRequestError(["max_tokens must be at least 1"]), 400, "invalid_request_error", false],
      [new Aborted(status.UNAUTHENTICATED, "no key"), 401, "authentication_error", false],
      [new Aborted(status.PERMISSION_DENIED, "tenant"), 403, "permission_error", false],
      [new Aborted(status.RESOURCE_EXHAUSTED, "full"), 429, "rate_limit_error", true],
      [new Aborted(status.UNAVAILABLE, "draining"), 503, "service_unavailable_error", true],
      [new Aborted(status.DEADLINE_EXCEEDED, "late"), 504, "timeout_error", false],
      [new Error("bug"), 500, "server_error", false],
      [
        new HttpError(404, "not_found_error", "no such model", "model_not_found", "model"),
        404,
        "not_found_error",
        false,
      ],
    ];
    for (const [error, httpStatus, type, retry] of cases) {
      const failure = httpFailure(error);
      assert.equal(failure.status, httpStatus, String(error));
      assert.equal(failure.body.error.type, type);
      assert.equal(failure.body.error.message, (error as Error).message);
      assert.equal(failure.retryAfterS !== undefined, retry);
    }
  });
});

describe("chat templates", () => {
  const root = mkdtempSync(join(tmpdir(), "specgate-chat-"));
  after(() => rmSync(root, { recursive: true, force: true }));

  function modelDir(name: string, config: object, tokenizerConfig?: object): string {
    const dir = join(root, name);
    mkdirSync(join(dir, "onnx"), { recursive: true });
    writeFileSync(join(dir, "onnx", "model.onnx"), "");
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    if (tokenizerConfig) writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(tokenizerConfig));
    return dir;
  }

  const messages = [
    { role: "system", content: "Be kind." },
    { role: "user", content: "Hi" },
  ];

  it("renders the model's tokenizer_config.json template, without the BOS that tokenizing adds", () => {
    const dir = modelDir(
      "chatty",
      {},
      {
        bos_token: { content: "<s>" },
        eos_token: "</s>",
        chat_template:
          "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
      },
    );
    const template = loadChatTemplate(dir);
    assert.ok(template);
    assert.equal(template.render(messages), "<|system|>Be kind.</s><|user|>Hi</s><|assistant|>");
  });

  it("takes a configured file first, the built-in one for stories260K models, else none", () => {
    const file = join(root, "template.jinja");
    writeFileSync(file, "{{ messages[-1].content }}!");
    const dir = modelDir("plain", {});
    assert.equal(loadChatTemplate(dir), undefined);
    assert.equal(loadChatTemplate(dir, file)?.render(messages), "Hi!");
    const stories = loadChatTemplate(modelDir("stories", { specgate: { source: "stories260K.bin" } }));
    assert.ok(stories?.source.includes("built-in"));
    assert.equal(stories?.render(messages), "Be kind.\nHi");
  });

  it("a template that refuses a conversation is a 400 on messages", () => {
    const dir = modelDir("strict", {}, { chat_template: "{{ raise_exception('roles must alternate') }}" });
    const error = refusal(() => loadChatTemplate(dir)?.render(messages));
    assert.equal(error.status, 400);
    assert.equal(error.param, "messages");
    assert.match(error.message, /roles must alternate/);
  });
});
