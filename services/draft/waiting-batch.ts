/**
 * Batches work without a timer: the first item runs at once; items that arrive while a batch runs wait and all go
 * together into the next batch. Under load batches grow by themselves (many sequences per draft forward), and an
 * idle service adds no latency.
 */
interface Waiting<I, O> {
  readonly item: I;
  resolve(output: O): void;
  reject(error: unknown): void;
}

export class WaitingBatch<I, O> {
  #waiting: Waiting<I, O>[] = [];
  #running = false;

  /** `run` answers each item in order, an Error for an item that failed alone. */
  constructor(private readonly run: (items: I[]) => Promise<(O | Error)[]>) {}

  submit(item: I): Promise<O> {
    const output = new Promise<O>((resolve, reject) => this.#waiting.push({ item, resolve, reject }));
    void this.#drain();
    return output;
  }

  async #drain(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    while (this.#waiting.length > 0) {
      const batch = this.#waiting;
      this.#waiting = [];
      try {
        const outputs = await this.run(batch.map((w) => w.item));
        batch.forEach((w, i) => {
          const output = outputs[i];
          if (output instanceof Error) w.reject(output);
          else w.resolve(output);
        });
      } catch (error) {
        for (const w of batch) w.reject(error);
      }
    }
    this.#running = false;
  }
}
