/**
 * Span attributes of a round and of a request, built from the records the services hand over.
 */
import type { Attributes, AttributeValue } from "@opentelemetry/api";
import { ATTR, statAttribute } from "./attributes.ts";
import { type FinishedRequest, firstRejection, isBonus, type RequestLabels, type VerifiedRound } from "./records.ts";

export function roundAttributes(round: VerifiedRound): Attributes {
  const attributes: Attributes = {
    [ATTR.round]: round.round,
    [ATTR.k]: round.k,
    [ATTR.proposed]: round.proposed,
    [ATTR.accepted]: round.accepted,
    [ATTR.nextToken]: round.nextToken,
    [ATTR.nextTokenKind]: isBonus(round) ? "bonus" : "correction",
    [ATTR.replica]: round.replica,
    [ATTR.batchSize]: round.batchSize,
    [ATTR.reprefilled]: round.reprefilled,
    [ATTR.queueWaitMs]: round.queueWaitMs,
    [ATTR.draftMs]: round.draftMs,
    [ATTR.verifyMs]: round.verifyMs,
    [ATTR.roundMs]: round.roundMs,
  };
  const rejectedAt = firstRejection(round);
  if (rejectedAt !== undefined) attributes[ATTR.firstRejection] = rejectedAt;
  return attributes;
}

export function requestLabelAttributes(labels: RequestLabels): Attributes {
  return { [ATTR.tenant]: labels.tenant, [ATTR.model]: labels.model, [ATTR.drafter]: labels.drafter };
}

/** Sampling and limits the client asked for (gen_ai request attributes); absent fields are left out. */
export interface RequestParameters {
  maxTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

export function requestParameterAttributes(parameters: RequestParameters): Attributes {
  const attributes: Attributes = {};
  if (parameters.maxTokens !== undefined) attributes[ATTR.maxTokens] = parameters.maxTokens;
  if (parameters.temperature !== undefined) attributes[ATTR.temperature] = parameters.temperature;
  if (parameters.topK !== undefined) attributes[ATTR.topK] = parameters.topK;
  if (parameters.topP !== undefined) attributes[ATTR.topP] = parameters.topP;
  if (parameters.seed !== undefined) attributes[ATTR.seed] = parameters.seed;
  return attributes;
}

function attributeValue(value: unknown): AttributeValue | undefined {
  if (typeof value === "number" || typeof value === "string" || typeof value === "boolean") return value;
  if (Array.isArray(value) && value.every((item) => typeof item === "number")) return value as number[];
  if (Array.isArray(value) && value.every((item) => typeof item === "string")) return value as string[];
  if (Array.isArray(value) && value.every((item) => typeof item === "boolean")) return value as boolean[];
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Every field of the returned statistics as `specgate.<field>`; a list of records (one per round, say) becomes one
 * list per record field, `specgate.<field>.<key>`, since attributes cannot nest. Plus finish reason and gen_ai token
 * usage; the status is the transport's (request-trace.ts).
 */
export function finishedRequestAttributes(request: FinishedRequest): Attributes {
  const attributes: Attributes = {};
  for (const [field, value] of Object.entries(request.stats)) {
    if (Array.isArray(value) && value.length > 0 && value.every(isRecord)) {
      const keys = new Set(value.flatMap((record) => Object.keys(record)));
      for (const key of keys) {
        const converted = attributeValue(value.map((record) => record[key]));
        if (converted !== undefined) attributes[`${statAttribute(field)}.${key}`] = converted;
      }
      continue;
    }
    const converted = attributeValue(value);
    if (converted !== undefined) attributes[statAttribute(field)] = converted;
  }
  attributes[ATTR.inputTokens] = request.inputTokens;
  attributes[ATTR.outputTokens] = request.stats.generated_tokens;
  attributes[ATTR.finishReason] = request.finishReason;
  attributes[ATTR.finishReasons] = [request.finishReason];
  return attributes;
}
