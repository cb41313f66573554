import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { CleaveError } from '../../core/errors.js';

/**
 * Output paths are checked before any work starts, so a long run never ends in a write that was
 * bound to fail: the folder must exist and be writable, and the file must not be a folder.
 */
export function checkOutputFile(flag: string, file: string | undefined): void {
  if (file === undefined) return;
  if (file === '') throw new CleaveError(`${flag}: the file name is empty`);
  const full = resolve(file);
  if (existsSync(full) && statSync(full).isDirectory()) throw new CleaveError(`${flag} ${file}: is a folder; give a file name in it`);
  const dir = dirname(full);
  if (!existsSync(dir)) throw new CleaveError(`${flag} ${file}: the folder ${dirname(file)} does not exist`);
  if (!statSync(dir).isDirectory()) throw new CleaveError(`${flag} ${file}: ${dirname(file)} is not a folder`);
  writable(flag, file, dir);
}

/**
 * A folder the command will write into, made when the first file goes there: it must be a folder if
 * it exists, else its nearest existing parent must be a writable folder.
 */
export function checkOutputDir(flag: string, dir: string | undefined): void {
  if (dir === undefined) return;
  if (dir === '') throw new CleaveError(`${flag}: the folder name is empty`);
  let at = resolve(dir);
  while (!existsSync(at) && dirname(at) !== at) at = dirname(at);
  if (!statSync(at).isDirectory()) throw new CleaveError(`${flag} ${dir}: ${at === resolve(dir) ? 'is a file, not a folder' : `${at} is a file, not a folder`}`);
  writable(flag, dir, at);
}

function writable(flag: string, what: string, dir: string): void {
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new CleaveError(`${flag} ${what}: the folder ${dir} is not writable`);
  }
}
