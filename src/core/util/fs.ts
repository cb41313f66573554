import { readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The temporary file writeFileAtomic writes `file` through (this process's, by its PID). */
export const temporaryName = (file: string, pid = process.pid): string => `${file}.tmp-${pid}`;

const TEMPORARY = /\.tmp-(\d+)$/;

/** Writes through a temporary file and a rename, so a crash never leaves a half-written file. */
export function writeFileAtomic(file: string, data: Uint8Array | string): void {
  const tmp = temporaryName(file);
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Whether a process of this PID runs on this host (one of another user's counts: signalling it is refused, not unknown). */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the temporary files of writeFileAtomic left in `dir` by processes that are gone (killed
 * mid-write), of the files `of` names (all, if not given); returns their paths. A live process's —
 * this one's included — may still be writing and renaming its file, so those stay.
 */
export function removeStaleTemporaries(dir: string, of?: (file: string) => boolean): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMPORARY.exec(name);
    if (!m || (of && !of(name.slice(0, m.index))) || processAlive(Number(m[1]))) continue;
    const file = join(dir, name);
    rmSync(file, { force: true });
    removed.push(file);
  }
  return removed;
}
