/**
 * The drafter list of SPECGATE_DRAFTERS, `int4=stories260k-int4,ngram`: the draft service loads what it names, the
 * gateway offers and lists the names, the local stack builds the models.
 */

/** One served drafter: `name=<model directory>` runs a model drafter, `name=ngram` the prompt-lookup drafter. */
export type DrafterSpec =
  | { readonly name: string; readonly kind: "model"; readonly model: string }
  | { readonly name: string; readonly kind: "ngram" };

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Parses `int4=stories260k-int4,ngram` (a bare `ngram` is short for `ngram=ngram`). */
export function parseDrafterSpecs(text: string): DrafterSpec[] {
  const specs = text
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0)
    .map((entry): DrafterSpec => {
      const [name, source = name] = entry.split("=", 2).map((part) => part.trim());
      if (!NAME.test(name)) throw new RangeError(`drafter name "${name}" must be letters, digits, ".", "_" or "-"`);
      if (name === "none") throw new RangeError(`"none" is reserved for plain decoding and cannot name a drafter`);
      if (source.length === 0) throw new RangeError(`drafter "${name}" needs a model directory or "ngram"`);
      return source === "ngram" ? { name, kind: "ngram" } : { name, kind: "model", model: source };
    });
  if (specs.length === 0) throw new RangeError("at least one drafter must be served");
  const names = new Set<string>();
  for (const { name } of specs) {
    if (names.has(name)) throw new RangeError(`drafter "${name}" is listed twice`);
    names.add(name);
  }
  return specs;
}
