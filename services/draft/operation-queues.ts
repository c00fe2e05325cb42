/**
 * One queue of operations per sequence: each operation on a sequence starts after the previous one ended, whether
 * that succeeded or failed; operations on different sequences do not wait for each other.
 */
export class OperationQueues {
  /** Per sequence, the settled tail of its operations. */
  readonly #tails = new Map<string, Promise<void>>();

  /** Runs the operation after the ones already queued for the sequence; resolves or rejects with its outcome. */
  run<T>(sequenceId: string, operation: () => T | Promise<T>): Promise<T> {
    const result = (this.#tails.get(sequenceId) ?? Promise.resolve()).then(operation);
    const tail = result.then(
      () => {},
      () => {},
    );
    this.#tails.set(sequenceId, tail);
    void tail.then(() => {
      if (this.#tails.get(sequenceId) === tail) this.#tails.delete(sequenceId);
    });
    return result;
  }

  /** Waits until no operation is running or queued. */
  async idle(): Promise<void> {
    while (this.#tails.size > 0) await Promise.all(this.#tails.values());
  }
}
