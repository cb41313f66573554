import { CleaveError } from '../../../core/errors.js';

// One stack serves both times a partition is read: while modules are constructed (a module keeps
// the partition it was created in) and while they are traced (an op takes the innermost one open).
const open: number[] = [];

/**
 * SMP's `with smp.partition(i):` — modules created and ops run inside `fn` go to pipeline stage
 * `index`; the innermost block wins. Returns what `fn` returns.
 */
export function partition<T>(index: number, fn: () => T): T {
  if (!Number.isInteger(index) || index < 0) throw new CleaveError(`partition(${index}): a partition is a stage index, a non-negative integer`);
  return within(index, fn);
}

/** The partition of the innermost open block, if any. */
export function currentPartition(): number | undefined {
  return open.at(-1);
}

/** Runs `fn` inside partition `index` (nothing opens for `undefined`). */
export function within<T>(index: number | undefined, fn: () => T): T {
  if (index === undefined) return fn();
  open.push(index);
  try {
    const r = fn();
    // An async block would leave before its awaited work runs, so that work would escape the block.
    if (typeof r === 'object' && r !== null && typeof (r as { then?: unknown }).then === 'function') {
      (r as unknown as PromiseLike<unknown>).then(undefined, () => undefined);
      throw new CleaveError(`partition(${index}, fn): fn returned a promise; partition blocks are synchronous (construct modules and trace without await inside them)`);
    }
    return r;
  } finally {
    open.pop();
  }
}
