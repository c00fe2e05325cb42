/**
 * Whether a host (name or IP; IPv6 with or without brackets) is this machine's loopback interface: where the client
 * defaults to plaintext, and where the gateway listens in plaintext without a warning.
 */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase();
  return bare === "localhost" || bare === "::1" || bare.startsWith("127.");
}
