/**
 * Unknown-field check for Kubernetes objects. kubernetes-models' `validate()` checks types and required fields but,
 * like the OpenAPI schema it comes from, accepts fields that do not exist, while `kubectl apply` (strict field
 * validation) rejects them. The package's type declarations list every field of every API type, so this walks an
 * object alongside them: a misspelt `readinesProbe` fails here as it would on a cluster.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { isObject, type Json } from "./k8s-patch.ts";
import type { K8sObject } from "./kustomize.ts";

const require = createRequire(import.meta.url);
const MODELS_ROOT = dirname(require.resolve("kubernetes-models/package.json"));
const APIMACHINERY_ROOT = dirname(
  require.resolve("@kubernetes-models/apimachinery/package.json", { paths: [MODELS_ROOT] }),
);

interface TypeDeclaration {
  /** Field name → TypeScript type text; undefined for aliases of scalars (Quantity, IntOrString, Time). */
  fields: Map<string, string> | undefined;
  /** Imported type name → declaration file. */
  imports: Map<string, string>;
}

const cache = new Map<string, TypeDeclaration>();

function declarationFile(specifier: string, fromFile: string): string {
  const bare = specifier.replace(/\.js$/, "");
  const base = bare.startsWith(".")
    ? join(dirname(fromFile), bare)
    : join(APIMACHINERY_ROOT, bare.replace(/^@kubernetes-models\/apimachinery\//, ""));
  return `${base}.d.ts`;
}

/** Splits `"a"?: T; "b": U;` into fields, keeping braces and angle brackets of nested types together. */
function parseFields(body: string): Map<string, string> {
  const fields = new Map<string, string>();
  const property = /"([^"]+)"\??:\s*/y;
  let at = 0;
  while (at < body.length) {
    while (at < body.length && /\s/.test(body[at])) at++;
    if (at >= body.length) break;
    property.lastIndex = at;
    const match = property.exec(body);
    if (match === null) throw new Error(`unexpected declaration text: ${body.slice(at, at + 60)}`);
    at = property.lastIndex;
    let depth = 0;
    const start = at;
    while (at < body.length && !(body[at] === ";" && depth === 0)) {
      if (body[at] === "{" || body[at] === "<") depth++;
      if (body[at] === "}" || body[at] === ">") depth--;
      at++;
    }
    fields.set(match[1], body.slice(start, at).trim());
    at++;
  }
  return fields;
}

function readDeclaration(file: string): TypeDeclaration {
  const cached = cache.get(file);
  if (cached !== undefined) return cached;
  const text = readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
  const imports = new Map<string, string>();
  for (const [, names, specifier] of text.matchAll(/import \{([^}]*)\} from "([^"]+)";/g)) {
    for (const name of names.split(",").map((part) => part.trim())) {
      if (name.startsWith("IIoK8s")) imports.set(name, declarationFile(specifier, file));
    }
  }
  const start = text.search(/export interface \w+(?: extends \w+)? \{/);
  let fields: Map<string, string> | undefined;
  if (start >= 0) {
    const open = text.indexOf("{", start);
    const close = text.indexOf("\n}", open);
    fields = parseFields(text.slice(open + 1, close));
  }
  const declaration = { fields, imports };
  cache.set(file, declaration);
  return declaration;
}

function checkValue(value: Json, type: string, declaration: TypeDeclaration, path: string, problems: string[]): void {
  const array = /^Array<(.+)>$/s.exec(type);
  if (array !== null) {
    if (Array.isArray(value)) {
      for (const [i, item] of value.entries()) checkValue(item, array[1], declaration, `${path}[${i}]`, problems);
    }
    return;
  }
  const map = /^\{\s*\[key: string\]:\s*(.+?);?\s*\}$/s.exec(type);
  if (map !== null) {
    if (isObject(value)) {
      for (const [key, item] of Object.entries(value))
        checkValue(item, map[1], declaration, `${path}.${key}`, problems);
    }
    return;
  }
  const file = declaration.imports.get(type);
  if (file !== undefined && isObject(value)) checkObject(value, file, path, problems);
}

function checkObject(value: { [key: string]: Json }, file: string, path: string, problems: string[]): void {
  const declaration = readDeclaration(file);
  if (declaration.fields === undefined) return;
  for (const [key, item] of Object.entries(value)) {
    const type = declaration.fields.get(key);
    if (type === undefined) problems.push(`${path}: unknown field "${key}"`);
    else checkValue(item, type, declaration, `${path}.${key}`, problems);
  }
}

/** The declaration file of a kind in kubernetes-models, e.g. apps/v1 Deployment → apps/v1/Deployment.d.ts. */
export function kindDeclaration(apiVersion: string, kind: string): string | undefined {
  const file = join(MODELS_ROOT, apiVersion.includes("/") ? apiVersion : "v1", `${kind}.d.ts`);
  return existsSync(file) ? file : undefined;
}

/** Every field of `object` (at any depth) that its API type does not declare, as "Kind/name.path: ..." lines. */
export function unknownFields(object: K8sObject): string[] {
  const file = kindDeclaration(object.apiVersion, object.kind);
  if (file === undefined) return [`${object.kind}/${object.metadata.name}: no declaration for ${object.apiVersion}`];
  const problems: string[] = [];
  checkObject(object, file, `${object.kind}/${object.metadata.name}`, problems);
  return problems;
}
