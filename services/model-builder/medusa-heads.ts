/**
 * Medusa heads as files: the weights `npm run train:medusa` writes and the graph builder reads. Two files per set,
 * `<name>.json` (shapes, training settings and the accuracy report) and `<name>.f32` (little-endian float32: per
 * head W, b and, for heads with their own projection, the projection). Kept under models/ (git-ignored), like the
 * models they are built into.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { LlamaWeights, Matrix, MedusaHead } from "./llama-weights.ts";

/** How a head maps its residual block's output to logits. */
export type HeadProjection = "shared" | "own";

export interface HeadSetInfo {
  readonly heads: number;
  readonly dim: number;
  readonly vocabSize: number;
  readonly projection: HeadProjection;
  /** Whatever the trainer wants to keep beside the weights (settings, accuracies). */
  readonly training: Record<string, unknown>;
}

export interface HeadSet {
  readonly info: HeadSetInfo;
  readonly heads: readonly MedusaHead[];
}

/** Untrained heads: W = 0 and b = 0, so each head's logits are the classifier's (own projections start as a copy). */
export function initialHeads(weights: LlamaWeights, count: number, projection: HeadProjection): MedusaHead[] {
  const { dim, vocabSize } = weights.config;
  const classifier = weights.classifier ?? weights.embedding;
  if (!("data" in classifier)) throw new Error("Medusa heads need a dense classifier");
  return Array.from({ length: count }, () => ({
    residual: { rows: dim, cols: dim, data: new Float32Array(dim * dim) },
    bias: new Float32Array(dim),
    projection:
      projection === "shared" ? null : { rows: vocabSize, cols: dim, data: Float32Array.from(classifier.data) },
  }));
}

export function headFiles(dir: string, name: string): { readonly json: string; readonly weights: string } {
  return { json: join(dir, `${name}.json`), weights: join(dir, `${name}.f32`) };
}

function tensors(head: MedusaHead): Float32Array[] {
  return head.projection ? [head.residual.data, head.bias, head.projection.data] : [head.residual.data, head.bias];
}

/** Writes a head set (the weights first, then the JSON that names them, each swapped in whole). */
export async function writeHeadSet(dir: string, name: string, set: HeadSet): Promise<void> {
  const files = headFiles(dir, name);
  await mkdir(dirname(files.json), { recursive: true });
  const parts = set.heads.flatMap(tensors);
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const part of parts) {
    bytes.set(new Uint8Array(part.buffer, part.byteOffset, part.byteLength), at);
    at += part.byteLength;
  }
  await writeFile(`${files.weights}.tmp-${process.pid}`, bytes);
  await rename(`${files.weights}.tmp-${process.pid}`, files.weights);
  await writeFile(`${files.json}.tmp-${process.pid}`, `${JSON.stringify(set.info, null, 2)}\n`);
  await rename(`${files.json}.tmp-${process.pid}`, files.json);
}

/** Reads a head set; null when its files are missing. */
export async function readHeadSet(dir: string, name: string): Promise<HeadSet | null> {
  const files = headFiles(dir, name);
  let info: HeadSetInfo;
  let raw: Buffer;
  try {
    info = JSON.parse(await readFile(files.json, "utf8")) as HeadSetInfo;
    raw = await readFile(files.weights);
  } catch {
    return null;
  }
  const { heads, dim, vocabSize, projection } = info;
  const perHead = dim * dim + dim + (projection === "own" ? vocabSize * dim : 0);
  if (raw.byteLength !== heads * perHead * 4) {
    throw new Error(`${files.weights}: ${raw.byteLength} bytes, want ${heads * perHead * 4} for ${heads} heads`);
  }
  const all = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const matrix = (offset: number, rows: number, cols: number): Matrix => ({
    rows,
    cols,
    data: all.subarray(offset, offset + rows * cols),
  });
  return {
    info,
    heads: Array.from({ length: heads }, (_, i) => {
      const base = i * perHead;
      return {
        residual: matrix(base, dim, dim),
        bias: all.subarray(base + dim * dim, base + dim * dim + dim),
        projection: projection === "own" ? matrix(base + dim * dim + dim, vocabSize, dim) : null,
      };
    }),
  };
}
