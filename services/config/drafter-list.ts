/**
 * The drafter list of SPECGATE_DRAFTERS, `int4=stories260k-int4,ngram,lookahead`: the draft service loads what it
 * names, the target replicas run the self-drafters, the gateway offers and lists the names, the local stack builds
 * the models.
 */

/** Drafters that live with the target: the replicas draft for themselves, without the draft service. */
export const SELF_DRAFTERS = ["medusa", "lookahead"] as const;
export type SelfDrafterKind = (typeof SELF_DRAFTERS)[number];

/**
 * One served drafter: `name=<model directory>` runs a model drafter, `name=ngram` the prompt-lookup drafter,
 * `name=medusa` and `name=lookahead` a self-drafter.
 */
export type DrafterSpec =
  | { readonly name: string; readonly kind: "model"; readonly model: string }
  | { readonly name: string; readonly kind: "ngram" }
  | { readonly name: string; readonly kind: SelfDrafterKind };

/** A drafter the draft service runs. */
export type ServiceDrafterSpec = Exclude<DrafterSpec, { readonly kind: SelfDrafterKind }>;

export function isSelfDrafter(spec: DrafterSpec): spec is { readonly name: string; readonly kind: SelfDrafterKind } {
  return (SELF_DRAFTERS as readonly string[]).includes(spec.kind);
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Parses `int4=stories260k-int4,ngram` (a bare `ngram` is short for `ngram=ngram`, and so for the self-drafters). */
export function parseDrafterSpecs(text: string): DrafterSpec[] {
  const specs = text
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0)
    .map((entry): DrafterSpec => {
      const [name, source = name] = entry.split("=", 2).map((part) => part.trim());
      if (!NAME.test(name)) throw new RangeError(`drafter name "${name}" must be letters, digits, ".", "_" or "-"`);
      if (name === "none") throw new RangeError(`"none" is reserved for plain decoding and cannot name a drafter`);
      if (source.length === 0) {
        throw new RangeError(`drafter "${name}" needs a model directory, "ngram", "medusa" or "lookahead"`);
      }
      if (source === "ngram") return { name, kind: "ngram" };
      const self = SELF_DRAFTERS.find((kind) => kind === source);
      return self ? { name, kind: self } : { name, kind: "model", model: source };
    });
  if (specs.length === 0) throw new RangeError("at least one drafter must be served");
  const names = new Set<string>();
  for (const { name } of specs) {
    if (names.has(name)) throw new RangeError(`drafter "${name}" is listed twice`);
    names.add(name);
  }
  return specs;
}
