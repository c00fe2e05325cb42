/**
 * The two patch kinds kustomize applies, implemented for the cases specgate's overlays use, so that the manifests can
 * be resolved and checked without kubectl or kustomize. Anything outside that subset throws instead of guessing, so a
 * result here is either what kustomize produces or an error.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Lists that strategic merge merges element by element (patchStrategy "merge" in the Kubernetes API types), keyed by
 * the field name and the merge key. `ports` is keyed by containerPort in containers and by port in Services.
 */
const MERGE_KEYS: Readonly<Record<string, string>> = {
  containers: "name",
  initContainers: "name",
  env: "name",
  volumes: "name",
  volumeMounts: "mountPath",
  imagePullSecrets: "name",
};

/** Lists without a patch strategy: the patch's list replaces the original. */
const REPLACED_LISTS = new Set(["args", "command", "tolerations", "matchExpressions", "nodeSelectorTerms", "metrics"]);

function mergeKeyOf(field: string, items: readonly Json[]): string | null {
  if (field in MERGE_KEYS) return MERGE_KEYS[field];
  if (field === "ports")
    return items.some((item) => isObject(item) && "containerPort" in item) ? "containerPort" : "port";
  if (REPLACED_LISTS.has(field)) return null;
  throw new Error(`strategic merge of list "${field}" is not implemented here; use a JSON6902 patch`);
}

function mergeList(field: string, original: Json[], patch: Json[], where: string): Json[] {
  const key = mergeKeyOf(field, [...original, ...patch]);
  if (key === null) return structuredClone(patch);
  const merged = structuredClone(original);
  for (const item of patch) {
    if (!isObject(item) || !(key in item)) throw new Error(`${where}: patch element of "${field}" lacks "${key}"`);
    const index = merged.findIndex((existing) => isObject(existing) && existing[key] === item[key]);
    if (index < 0) merged.push(structuredClone(item));
    else merged[index] = mergeObject(merged[index] as JsonObject, item, `${where}.${field}[${key}=${item[key]}]`);
  }
  return merged;
}

function mergeObject(original: JsonObject, patch: JsonObject, where: string): JsonObject {
  const merged = structuredClone(original);
  for (const [field, value] of Object.entries(patch)) {
    if (field.startsWith("$")) throw new Error(`${where}: strategic merge directive ${field} is not implemented here`);
    const current = merged[field];
    if (value === null) delete merged[field];
    else if (isObject(value) && isObject(current)) merged[field] = mergeObject(current, value, `${where}.${field}`);
    else if (Array.isArray(value) && Array.isArray(current)) merged[field] = mergeList(field, current, value, where);
    else merged[field] = structuredClone(value);
  }
  return merged;
}

/** Strategic merge patch (kubectl/kustomize semantics for the lists in MERGE_KEYS and REPLACED_LISTS). */
export function strategicMerge(original: JsonObject, patch: JsonObject): JsonObject {
  return mergeObject(original, patch, (patch.kind as string | undefined) ?? "patch");
}

export interface JsonPatchOperation {
  op: "add" | "remove" | "replace" | "test";
  path: string;
  value?: Json;
}

function pointer(path: string): string[] {
  if (path === "") return [];
  if (!path.startsWith("/")) throw new Error(`JSON pointer "${path}" must start with /`);
  return path
    .slice(1)
    .split("/")
    .map((token) => token.replaceAll("~1", "/").replaceAll("~0", "~"));
}

function child(parent: Json, token: string, path: string): Json {
  if (Array.isArray(parent)) {
    const index = Number(token);
    if (!Number.isInteger(index) || index < 0 || index >= parent.length)
      throw new Error(`${path}: no element ${token}`);
    return parent[index];
  }
  if (isObject(parent) && token in parent) return parent[token];
  throw new Error(`${path}: no member "${token}"`);
}

/** RFC 6902 add/remove/replace/test; a missing parent is an error, as it is for kustomize. */
export function applyJsonPatch(document: JsonObject, operations: readonly JsonPatchOperation[]): JsonObject {
  const result = structuredClone(document);
  for (const operation of operations) {
    const tokens = pointer(operation.path);
    if (tokens.length === 0) throw new Error("patching the whole document is not supported");
    const last = tokens[tokens.length - 1];
    const parent = tokens.slice(0, -1).reduce<Json>((node, token) => child(node, token, operation.path), result);
    switch (operation.op) {
      case "test":
        if (JSON.stringify(child(parent, last, operation.path)) !== JSON.stringify(operation.value)) {
          throw new Error(`${operation.path}: test failed`);
        }
        break;
      case "remove":
        child(parent, last, operation.path);
        if (Array.isArray(parent)) parent.splice(Number(last), 1);
        else delete (parent as JsonObject)[last];
        break;
      case "replace":
        child(parent, last, operation.path);
        if (Array.isArray(parent)) parent[Number(last)] = structuredClone(operation.value as Json);
        else (parent as JsonObject)[last] = structuredClone(operation.value as Json);
        break;
      case "add":
        if (operation.value === undefined) throw new Error(`${operation.path}: add without a value`);
        if (Array.isArray(parent)) {
          const index = last === "-" ? parent.length : Number(last);
          if (!Number.isInteger(index) || index < 0 || index > parent.length) {
            throw new Error(`${operation.path}: bad index ${last}`);
          }
          parent.splice(index, 0, structuredClone(operation.value));
        } else if (isObject(parent)) {
          parent[last] = structuredClone(operation.value);
        } else {
          throw new Error(`${operation.path}: parent is not a container`);
        }
        break;
      default:
        throw new Error(`JSON patch op "${(operation as { op: string }).op}" is not implemented here`);
    }
  }
  return result;
}
