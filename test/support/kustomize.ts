/**
 * A resolver for the subset of kustomize that specgate's k8s/ tree uses (resources, components, namespace, images,
 * patches), so the test suite can build every overlay the way `kustomize build` would and check the result without
 * kubectl. A kustomization field outside that subset is an error rather than silently ignored.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseAllDocuments } from "yaml";
import {
  applyJsonPatch,
  isObject,
  type Json,
  type JsonObject,
  type JsonPatchOperation,
  strategicMerge,
} from "./k8s-patch.ts";

export interface K8sObject extends JsonObject {
  apiVersion: string;
  kind: string;
  metadata: JsonObject & { name: string; namespace?: string; labels?: Record<string, string> };
}

const KUSTOMIZATION_FILE = "kustomization.yaml";
const SUPPORTED_FIELDS = new Set(["apiVersion", "kind", "resources", "components", "namespace", "images", "patches"]);

/** Kinds that are not namespaced, among those the tree may contain. */
const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"]);

interface PatchEntry {
  path?: string;
  patch?: string;
  target?: { group?: string; version?: string; kind?: string; name?: string; labelSelector?: string };
}

interface ImageEntry {
  name: string;
  newName?: string;
  newTag?: string;
  digest?: string;
}

/** Parses every document of a YAML file (empty documents dropped); YAML errors and warnings throw. */
export function readYamlDocuments(file: string): Json[] {
  const documents = parseAllDocuments(readFileSync(file, "utf8"), { merge: true });
  const parsed: Json[] = [];
  for (const document of documents) {
    const problems = [...document.errors, ...document.warnings];
    if (problems.length > 0) throw new Error(`${file}: ${problems.map((problem) => problem.message).join("; ")}`);
    const value = document.toJS() as Json;
    if (value !== null) parsed.push(value);
  }
  return parsed;
}

export function readKustomization(dir: string): JsonObject {
  const file = join(dir, KUSTOMIZATION_FILE);
  const [kustomization, ...rest] = readYamlDocuments(file);
  if (!isObject(kustomization) || rest.length > 0) throw new Error(`${file}: expected one mapping`);
  for (const field of Object.keys(kustomization)) {
    if (!SUPPORTED_FIELDS.has(field)) throw new Error(`${file}: field "${field}" is not supported by this resolver`);
  }
  return kustomization;
}

function asK8sObject(value: Json, source: string): K8sObject {
  if (!isObject(value) || typeof value.apiVersion !== "string" || typeof value.kind !== "string") {
    throw new Error(`${source}: not a Kubernetes object`);
  }
  if (!isObject(value.metadata) || typeof value.metadata.name !== "string") {
    throw new Error(`${source}: ${value.kind} without metadata.name`);
  }
  return value as K8sObject;
}

function group(apiVersion: string): string {
  return apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
}

export function objectId(object: K8sObject): string {
  return `${object.kind}/${object.metadata.name}`;
}

function matchesTarget(object: K8sObject, target: NonNullable<PatchEntry["target"]>): boolean {
  if (target.kind !== undefined && object.kind !== target.kind) return false;
  if (target.name !== undefined && object.metadata.name !== target.name) return false;
  if (target.group !== undefined && group(object.apiVersion) !== target.group) return false;
  if (target.version !== undefined && object.apiVersion.split("/").at(-1) !== target.version) return false;
  if (target.labelSelector !== undefined) {
    for (const term of target.labelSelector.split(",")) {
      const [key, value] = term.split("=").map((part) => part.trim());
      if (object.metadata.labels?.[key] !== value) return false;
    }
  }
  return true;
}

function applyPatch(objects: K8sObject[], entry: PatchEntry, dir: string): K8sObject[] {
  const source = entry.path === undefined ? `${dir} inline patch` : join(dir, entry.path);
  const text = entry.path === undefined ? entry.patch : readFileSync(join(dir, entry.path), "utf8");
  if (text === undefined) throw new Error(`${dir}: a patch needs "path" or "patch"`);
  const documents = parseAllDocuments(text).map((document) => document.toJS() as Json);
  if (documents.length !== 1) throw new Error(`${source}: a patch file holds exactly one patch`);
  const [patch] = documents;

  if (Array.isArray(patch)) {
    if (entry.target === undefined) throw new Error(`${source}: a JSON6902 patch needs a target`);
    const target = entry.target;
    let matched = 0;
    const patched = objects.map((object) => {
      if (!matchesTarget(object, target)) return object;
      matched++;
      return asK8sObject(applyJsonPatch(object, patch as unknown as JsonPatchOperation[]), source);
    });
    if (matched === 0) throw new Error(`${source}: target ${JSON.stringify(target)} matches no object`);
    return patched;
  }

  if (isObject(patch) && patch.$patch === "delete") {
    const { $patch: _, ...identity } = patch;
    const doomed = asK8sObject(identity, source);
    const kept = objects.filter(
      (object) => !(object.kind === doomed.kind && object.metadata.name === doomed.metadata.name),
    );
    if (kept.length === objects.length) throw new Error(`${source}: ${objectId(doomed)} matches no object to delete`);
    return kept;
  }
  const smp = asK8sObject(patch, source);
  const target = entry.target ?? { kind: smp.kind, name: smp.metadata.name };
  let matched = 0;
  const patched = objects.map((object) => {
    if (!matchesTarget(object, target)) return object;
    if (entry.target === undefined && group(object.apiVersion) !== group(smp.apiVersion)) return object;
    matched++;
    // A targeted patch may name any object; the matched object keeps its own identity.
    const body =
      entry.target === undefined ? smp : { ...smp, metadata: { ...smp.metadata, name: object.metadata.name } };
    return asK8sObject(strategicMerge(object, body), source);
  });
  if (matched === 0) throw new Error(`${source}: ${objectId(smp)} matches no object`);
  return patched;
}

function setImages(objects: K8sObject[], images: readonly ImageEntry[]): K8sObject[] {
  const rewrite = (image: string): string => {
    const name = image.split("@")[0].replace(/:[^:/]*$/, "");
    const entry = images.find((candidate) => candidate.name === name);
    if (entry === undefined) return image;
    const base = entry.newName ?? name;
    if (entry.digest !== undefined) return `${base}@${entry.digest}`;
    const tag = entry.newTag ?? image.slice(name.length).replace(/^:/, "").split("@")[0];
    return tag === "" ? base : `${base}:${tag}`;
  };
  return objects.map((object) => {
    const copy = structuredClone(object);
    for (const pod of podSpecs(copy)) {
      for (const field of ["containers", "initContainers"] as const) {
        for (const container of (pod[field] ?? []) as JsonObject[]) {
          if (typeof container.image === "string") container.image = rewrite(container.image);
        }
      }
    }
    return copy;
  });
}

/** The pod specs of workload objects (Deployment, StatefulSet, DaemonSet, Job: spec.template.spec; Pod: spec). */
export function podSpecs(object: K8sObject): JsonObject[] {
  const spec = object.spec;
  if (!isObject(spec)) return [];
  if (object.kind === "Pod") return [spec];
  if (isObject(spec.template) && isObject(spec.template.spec)) return [spec.template.spec];
  if (isObject(spec.jobTemplate) && isObject(spec.jobTemplate.spec)) {
    const template = spec.jobTemplate.spec.template;
    if (isObject(template) && isObject(template.spec)) return [template.spec];
  }
  return [];
}

function readResource(path: string, from: string): K8sObject[] {
  if (!existsSync(path)) throw new Error(`${from}: resource ${path} does not exist`);
  if (statSync(path).isDirectory()) return buildKustomization(path);
  return readYamlDocuments(path).map((document) => asK8sObject(document, path));
}

function buildInto(dir: string, objects: K8sObject[], expectedKind: "Kustomization" | "Component"): K8sObject[] {
  const kustomization = readKustomization(dir);
  const kind = kustomization.kind ?? "Kustomization";
  if (kind !== expectedKind) throw new Error(`${dir}: kind ${kind}, expected ${expectedKind}`);
  let result = [...objects];
  for (const resource of (kustomization.resources ?? []) as string[]) {
    result.push(...readResource(resolve(dir, resource), dir));
  }
  for (const component of (kustomization.components ?? []) as string[]) {
    result = buildInto(resolve(dir, component), result, "Component");
  }
  if (typeof kustomization.namespace === "string") {
    const namespace = kustomization.namespace;
    result = result.map((object) =>
      CLUSTER_SCOPED.has(object.kind) ? object : { ...object, metadata: { ...object.metadata, namespace } },
    );
  }
  for (const entry of (kustomization.patches ?? []) as PatchEntry[]) result = applyPatch(result, entry, dir);
  if (kustomization.images !== undefined) result = setImages(result, kustomization.images as unknown as ImageEntry[]);

  const seen = new Set<string>();
  for (const object of result) {
    const id = `${object.apiVersion} ${object.metadata.namespace ?? ""} ${objectId(object)}`;
    if (seen.has(id)) throw new Error(`${dir}: ${id} defined twice`);
    seen.add(id);
  }
  return result;
}

/** `kustomize build DIR` for the supported subset. */
export function buildKustomization(dir: string): K8sObject[] {
  return buildInto(dir, [], "Kustomization");
}
