import { renameSync, rmSync, writeFileSync } from 'node:fs';

/** Writes through a temporary file and a rename, so a crash never leaves a half-written file. */
export function writeFileAtomic(file: string, data: Uint8Array | string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
