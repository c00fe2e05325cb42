/**
 * Downloads a checkpoint, tokenizer or ONNX file for users with internet access: resumable (bytes go to
 * `<file>.partial` and an interrupted download continues with an HTTP Range request), checksum-verified (sha256),
 * and atomic (the file appears under its name only once complete and verified).
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { resolveSource } from "./pull-source.ts";

export interface PullProgress {
  /** Bytes of the file on disk so far (including those of an earlier, interrupted download). */
  readonly bytes: number;
  /** Size of the file, when the server says. */
  readonly total: number | undefined;
}

export interface PullOptions {
  readonly onProgress?: (progress: PullProgress) => void;
  /** Hex sha256 the file must have; without it the server's ETag is used when it is a sha256. */
  readonly expectedSha256?: string;
  /** Hub base URL for owner/repo/file sources (default: `SPECGATE_HUB_URL`, else the public hub). */
  readonly hubUrl?: string;
  /** Further attempts after a dropped connection or a server error (5xx, 408, 429), each resuming. Default 3. */
  readonly retries?: number;
  /** Wait before the n-th retry: n × this. Default 1000 ms. */
  readonly retryDelayMs?: number;
  readonly signal?: AbortSignal;
  readonly fetchImpl?: typeof fetch;
}

export interface PullResult {
  readonly path: string;
  readonly url: string;
  readonly bytes: number;
  readonly sha256: string;
  /** What the digest was checked against: the caller's value, the server's ETag, or nothing (print it). */
  readonly verifiedBy: "expected" | "etag" | "none";
  /** True when the file was already there and nothing was downloaded. */
  readonly cached: boolean;
}

export class PullError extends Error {
  override name = "PullError";
}

/** Kept beside the partial file so that a later run knows what the bytes belong to. */
interface PartialState {
  readonly url: string;
  /** Strong ETag or Last-Modified of the content, for If-Range. */
  readonly validator: string | undefined;
  readonly etagSha256: string | undefined;
}

const MAX_REDIRECTS = 10;
const SHA256 = /^[0-9a-f]{64}$/;

/** A sha256 carried by an ETag, as the hub's `X-Linked-Etag` does for large files; weak ETags promise no bytes. */
function sha256FromEtag(etag: string | null): string | undefined {
  if (etag === null || etag.startsWith("W/")) return undefined;
  const value = etag.replace(/^"|"$/g, "").toLowerCase();
  return SHA256.test(value) ? value : undefined;
}

function isRetryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

/** fetch wraps the network error (ECONNREFUSED, ECONNRESET…) in `cause`. */
function reason(error: unknown): string {
  const cause = (error as Error).cause;
  return cause instanceof Error ? cause.message : (error as Error).message;
}

/** Thrown for failures worth another attempt (dropped connection, server error). */
class TransientError extends PullError {}

async function diskOp<T>(what: string, path: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (error) {
    throw new PullError(`cannot ${what} ${path}: ${(error as Error).message}`);
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  await diskOp("read", path, async () => {
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  });
  return hash.digest("hex");
}

async function readPartialState(path: string, url: string): Promise<PartialState | undefined> {
  try {
    const state = JSON.parse(await readFile(path, "utf8")) as PartialState;
    return state.url === url ? state : undefined;
  } catch {
    return undefined;
  }
}

/** GET with redirects followed by hand, to see the hub's own headers (the sha256 is on the redirect, not the CDN). */
async function get(
  url: string,
  headers: Record<string, string>,
  options: PullOptions,
): Promise<{ response: Response; etagSha256: string | undefined }> {
  const fetchImpl = options.fetchImpl ?? fetch;
  let etagSha256: string | undefined;
  let current = url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    let response: Response;
    try {
      response = await fetchImpl(current, { headers, redirect: "manual", signal: options.signal });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      throw new TransientError(`cannot reach ${current}: ${reason(error)}`);
    }
    etagSha256 ??=
      sha256FromEtag(response.headers.get("x-linked-etag")) ?? sha256FromEtag(response.headers.get("etag"));
    const location = response.headers.get("location");
    if (response.status < 300 || response.status >= 400 || location === null) return { response, etagSha256 };
    await response.body?.cancel();
    current = new URL(location, current).href;
  }
  throw new PullError(`too many redirects from ${url}`);
}

/** Total size from a 206's `Content-Range: bytes start-end/total`. */
function parseContentRange(header: string | null): { start: number; total: number | undefined } | undefined {
  const match = header === null ? null : /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(header.trim());
  if (match === null) return undefined;
  return { start: Number(match[1]), total: match[2] === "*" ? undefined : Number(match[2]) };
}

/** Drops the partial file (its bytes belong to other content, or the server refuses to resume) and downloads anew. */
async function startOver(url: string, partial: string, statePath: string, options: PullOptions): Promise<PartialState> {
  await diskOp("remove", partial, () => rm(partial, { force: true }));
  await diskOp("remove", statePath, () => rm(statePath, { force: true }));
  return attempt(url, partial, statePath, options);
}

/**
 * One download attempt: continues `partial` from its current size when the server honours Range for the same
 * content, otherwise starts it over. Resolves once the body ended.
 */
async function attempt(url: string, partial: string, statePath: string, options: PullOptions): Promise<PartialState> {
  const previous = await readPartialState(statePath, url);
  let offset = previous === undefined ? 0 : ((await sizeOf(partial)) ?? 0);
  // Byte ranges and Content-Length must count the file's bytes, not a compressed transfer of them.
  const headers: Record<string, string> = { "accept-encoding": "identity" };
  if (offset > 0) {
    headers.range = `bytes=${offset}-`;
    if (previous?.validator !== undefined) headers["if-range"] = previous.validator;
  }
  const { response, etagSha256 } = await get(url, headers, options);
  const etag = response.headers.get("etag");
  const validator =
    etag !== null && !etag.startsWith("W/") ? etag : (response.headers.get("last-modified") ?? undefined);

  let total: number | undefined;
  if (response.status === 206) {
    const range = parseContentRange(response.headers.get("content-range"));
    const sameContent = previous?.validator === undefined || previous.validator === validator;
    if (range === undefined || range.start !== offset || !sameContent) {
      await response.body?.cancel();
      return startOver(url, partial, statePath, options);
    }
    total = range.total;
  } else if (response.status === 200) {
    offset = 0; // the server ignored Range (or the content changed): start over with this body
    const length = response.headers.get("content-length");
    total = length === null ? undefined : Number(length);
  } else if (response.status === 416 && offset > 0) {
    await response.body?.cancel();
    return startOver(url, partial, statePath, options);
  } else {
    await response.body?.cancel();
    const message = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""} for ${url}`;
    throw isRetryableStatus(response.status) ? new TransientError(message) : new PullError(message);
  }

  const state: PartialState = { url, validator, etagSha256: etagSha256 ?? previous?.etagSha256 };
  await diskOp("write", statePath, () => writeFile(statePath, JSON.stringify(state)));
  const file = await diskOp("open", partial, () => open(partial, offset > 0 ? "a" : "w"));
  let bytes = offset;
  try {
    options.onProgress?.({ bytes, total });
    if (response.body !== null) {
      const reader = response.body.getReader();
      for (;;) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (error) {
          if (options.signal?.aborted) throw error;
          throw new TransientError(`connection to ${url} dropped after ${bytes} bytes: ${reason(error)}`);
        }
        if (chunk.done) break;
        await diskOp("write", partial, () => file.write(chunk.value));
        bytes += chunk.value.byteLength;
        options.onProgress?.({ bytes, total });
      }
    }
  } finally {
    await file.close();
  }
  if (total !== undefined && bytes > total) {
    await diskOp("remove", statePath, () => rm(statePath, { force: true })); // the bytes cannot be resumed
    throw new TransientError(`${url} sent ${bytes} bytes, more than the ${total} announced`);
  }
  if (total !== undefined && bytes < total) throw new TransientError(`${url} ended after ${bytes} of ${total} bytes`);
  return state;
}

/** Downloads `source` (an http(s) URL or a hub `owner/repo/path/to/file[@revision]`) into `destDir`. */
export async function pull(source: string, destDir: string, options: PullOptions = {}): Promise<PullResult> {
  const { url, fileName } = resolveSource(source, options.hubUrl);
  const expected = options.expectedSha256?.toLowerCase();
  if (expected !== undefined && !SHA256.test(expected)) {
    throw new PullError(`expected sha256 must be 64 hex digits, got "${options.expectedSha256}"`);
  }
  const path = join(destDir, fileName);
  const partial = `${path}.partial`;
  const statePath = `${partial}.json`;

  const existing = await sizeOf(path);
  if (existing !== undefined) {
    const sha256 = await sha256OfFile(path);
    if (expected === undefined || sha256 === expected) {
      return { path, url, bytes: existing, sha256, verifiedBy: expected ? "expected" : "none", cached: true };
    }
  }
  await diskOp("create", destDir, () => mkdir(destDir, { recursive: true }));

  const retries = options.retries ?? 3;
  let state: PartialState | undefined;
  for (let failures = 0; state === undefined; ) {
    try {
      state = await attempt(url, partial, statePath, options);
    } catch (error) {
      if (!(error instanceof TransientError) || failures >= retries) throw error;
      failures++;
      await new Promise((resolve) => setTimeout(resolve, failures * (options.retryDelayMs ?? 1000)));
    }
  }

  const sha256 = await sha256OfFile(partial);
  const want = expected ?? state.etagSha256;
  if (want !== undefined && sha256 !== want) {
    await rm(partial, { force: true });
    await rm(statePath, { force: true });
    const from = expected !== undefined ? "expected" : "the server's ETag says";
    throw new PullError(`checksum mismatch for ${url}: ${from} sha256 ${want}, downloaded file has ${sha256}`);
  }
  await diskOp("move into place", path, () => rename(partial, path));
  await rm(statePath, { force: true });
  const bytes = (await sizeOf(path)) ?? 0;
  const verifiedBy = expected !== undefined ? "expected" : want !== undefined ? "etag" : "none";
  return { path, url, bytes, sha256, verifiedBy, cached: false };
}
