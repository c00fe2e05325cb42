/**
 * Chat messages → prompt text, with the model's chat template rendered by @huggingface/jinja (the Jinja subset
 * Hugging Face chat templates use, kept by Hugging Face for transformers.js). The template is, first found:
 * the file the gateway is given (--chat-template), the `chat_template` of the model folder's tokenizer_config.json,
 * or, for models built from the stories260K checkpoint, STORIES_TEMPLATE. Without one, chat requests get a 400.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { resolveModel } from "../../services/runtime/model-files.ts";
import { type HfTokenizerConfig, tokenContent } from "../../services/runtime/tokenizer/hf.ts";
import { HttpError } from "./errors.ts";
import type { ChatMessage } from "./openai-request.ts";

/**
 * stories260K was trained on short stories, not conversations: its template writes the messages' contents one per
 * line, so that the model continues the last one as a story ("Once upon a time" → "..., there was a little girl").
 */
const STORIES_TEMPLATE =
  "{% for message in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}{{ message.content }}{% endfor %}";

/** The checkpoint models-build.ts records as their source (the gateway does not import the model builder). */
const STORIES_CHECKPOINT = "stories260K.bin";

export interface ChatTemplate {
  /** Where the template came from (logged at start-up). */
  readonly source: string;
  /** The prompt for `messages`, ready for the assistant's turn; without the BOS token, which tokenizing adds. */
  render(messages: readonly ChatMessage[]): string;
}

interface TokenizerConfig extends HfTokenizerConfig {
  readonly chat_template?: string | readonly { name: string; template: string }[];
}

function readJson<T>(path: string): T | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw new Error(`${path}: invalid JSON (${(error as Error).message})`);
  }
}

/** tokenizer_config.json may hold one template or several by name; chat requests use "default". */
function templateOf(config: TokenizerConfig): string | undefined {
  const { chat_template: template } = config;
  if (typeof template === "string" || template === undefined) return template;
  return template.find((t) => t.name === "default")?.template;
}

function compile(text: string, source: string, config: TokenizerConfig): ChatTemplate {
  let template: Template;
  try {
    template = new Template(text);
  } catch (error) {
    throw new Error(`the chat template from ${source} does not parse: ${(error as Error).message}`);
  }
  const bos = tokenContent(config.bos_token) ?? "";
  const eos = tokenContent(config.eos_token) ?? "";
  return {
    source,
    render(messages) {
      let prompt: string;
      try {
        prompt = template.render({ messages, bos_token: bos, eos_token: eos, add_generation_prompt: true });
      } catch (error) {
        // Templates refuse conversations they cannot render (raise_exception: roles out of order, ...).
        throw new HttpError(
          400,
          "invalid_request_error",
          `chat template: ${(error as Error).message}`,
          "invalid_value",
          "messages",
        );
      }
      return bos !== "" && prompt.startsWith(bos) ? prompt.slice(bos.length) : prompt;
    },
  };
}

/** The chat template of `model` (a folder or a name under models/), or undefined when it has none. */
export function loadChatTemplate(model: string, file?: string): ChatTemplate | undefined {
  const files = resolveModel(model);
  const configPath = join(files.dir, "tokenizer_config.json");
  const config = readJson<TokenizerConfig>(configPath) ?? {};
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      throw new Error(`cannot read the chat template ${file}: ${(error as Error).message}`);
    }
    return compile(text, file, config);
  }
  const own = templateOf(config);
  if (own !== undefined) return compile(own, configPath, config);
  const built = (files.config as { specgate?: { source?: string } }).specgate;
  if (built?.source === STORIES_CHECKPOINT)
    return compile(STORIES_TEMPLATE, "the built-in stories260K template", config);
  return undefined;
}
