/**
 * Runs `tasks` in order with at most `limit` total weight in flight (a task whose weight alone
 * exceeds the room left waits until it runs alone or fits). A task may give its slot back before it
 * settles (the function it is called with; once is enough). Failures go to `fail`; after an abort no
 * further task starts. Resolves when every started task has settled.
 */
export function runBounded<T>(
  tasks: Array<(freeSlot: () => void) => Promise<T>>,
  weights: number[],
  limit: number,
  signal: AbortSignal,
  fail: (error: unknown) => void,
): Promise<Array<T | undefined>> {
  const results: Array<T | undefined> = new Array(tasks.length);
  let next = 0;
  let load = 0;
  /** Tasks holding a slot. */
  let running = 0;
  /** Tasks not settled yet (with or without a slot). */
  let settling = 0;
  return new Promise((resolve) => {
    const pump = () => {
      while (
        next < tasks.length &&
        !signal.aborted &&
        (running === 0 || load + (weights[next] ?? 1) <= limit)
      ) {
        const index = next++;
        const weight = weights[index] ?? 1;
        load += weight;
        running++;
        let slotHeld = true;
        const freeSlot = () => {
          if (!slotHeld) return;
          slotHeld = false;
          load -= weight;
          running--;
          pump();
        };
        settling++;
        void (async () => {
          try {
            results[index] = await tasks[index]!(freeSlot);
          } catch (error) {
            fail(error);
          } finally {
            settling--;
            freeSlot();
            if (settling === 0) pump();
          }
        })();
      }
      if (settling === 0 && (next >= tasks.length || signal.aborted)) resolve(results);
    };
    pump();
  });
}
