/**
 * Waiting on Redis with a way out: a command to a Redis that is down waits in ioredis's queue until it returns, which
 * may be never; callers that must answer in bounded time race it against their signal.
 */

/** `promise`, or a rejection with the signal's reason as soon as it aborts (without a signal: `promise`). */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
