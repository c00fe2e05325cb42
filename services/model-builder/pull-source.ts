/**
 * What `pull` downloads: an http(s) URL as given, or a Hugging Face hub file written `owner/repo/path/to/file`, with
 * an optional revision as `owner/repo@revision/path/to/file` or `owner/repo/path/to/file@revision` (default main).
 */

/** The public hub; `SPECGATE_HUB_URL` points elsewhere (a mirror, or a local server in tests). */
const PUBLIC_HUB_URL = "https://huggingface.co";

export function hubBaseUrl(): string {
  return process.env.SPECGATE_HUB_URL || PUBLIC_HUB_URL;
}

export interface PullSource {
  readonly url: string;
  /** Name of the downloaded file: the last segment of the path. */
  readonly fileName: string;
}

export function resolveSource(source: string, hub: string = hubBaseUrl()): PullSource {
  const trimmed = source.trim();
  if (/^https?:\/\//i.test(trimmed)) {
    const url = new URL(trimmed);
    const fileName = decodeURIComponent(url.pathname.split("/").at(-1) ?? "");
    if (fileName === "") throw new Error(`${source}: the URL does not end with a file name`);
    return { url: url.href, fileName };
  }
  const parts = trimmed.split("/");
  if (parts.length < 3 || parts.some((part) => part === "")) {
    throw new Error(`${source}: expected an http(s) URL or a hub file as owner/repo/path/to/file[@revision]`);
  }
  const [owner, repoPart, ...path] = parts;
  const [repo, repoRevision] = repoPart.split("@", 2);
  const [last, fileRevision] = (path.at(-1) as string).split("@", 2);
  path[path.length - 1] = last;
  if (repoRevision !== undefined && fileRevision !== undefined) {
    throw new Error(`${source}: give the revision once (owner/repo@revision/file or owner/repo/file@revision)`);
  }
  const revision = repoRevision ?? fileRevision ?? "main";
  if (repo === "" || last === "" || revision === "") throw new Error(`${source}: empty repository, file or revision`);
  const encodedPath = path.map(encodeURIComponent).join("/");
  return {
    url: `${hub.replace(/\/+$/, "")}/${owner}/${repo}/resolve/${encodeURIComponent(revision)}/${encodedPath}`,
    fileName: last,
  };
}
