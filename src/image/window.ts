/**
 * Tasks started in image order and consumed in the same order, with at most `maxCount`
 * tasks or `maxWeight` bytes outstanding: the bounded look-ahead that keeps the blob store
 * busy during backup and fetches chunks ahead of the writer during restore.
 */
export class OrderedWindow<T> {
  private readonly queue: { task: Promise<T>; weight: number }[] = [];
  private weight = 0;

  constructor(
    private readonly maxCount: number,
    private readonly maxWeight: number,
  ) {}

  get size(): number {
    return this.queue.length;
  }

  get full(): boolean {
    return this.queue.length >= this.maxCount || this.weight >= this.maxWeight;
  }

  push(task: Promise<T>, weight: number): void {
    // Rejections are seen when the task is shifted; until then they must not count as
    // unhandled (which would end the process).
    task.catch(() => undefined);
    this.queue.push({ task, weight });
    this.weight += weight;
  }

  /** The oldest task's result (rejects with its error). */
  async shift(): Promise<T> {
    const head = this.queue.shift();
    if (!head) throw new Error('OrderedWindow.shift on an empty window');
    this.weight -= head.weight;
    return head.task;
  }

  /** Waits for every outstanding task without consuming results: for clean stops on error. */
  async settle(): Promise<void> {
    const rest = this.queue.splice(0);
    this.weight = 0;
    await Promise.allSettled(rest.map((q) => q.task));
  }
}
