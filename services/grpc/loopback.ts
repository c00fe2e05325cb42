/** Whether a host (name or IP; IPv6 with or without brackets) is this machine's loopback interface. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase();
  return bare === "localhost" || bare === "::1" || bare.startsWith("127.");
}
