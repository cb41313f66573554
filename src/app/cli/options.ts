import { CleaveError } from '../../core/errors.js';

/** Parses an optional numeric flag; a value that is not a finite number ≥ `min` names the flag. */
export function numberFlag(flag: string, v: string | undefined, min = -Infinity): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new CleaveError(`${flag} must be a number${min > -Infinity ? ` ≥ ${min}` : ''}, got '${v}'`);
  return n;
}

export function positiveInt(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new CleaveError(`${flag} must be a positive integer, got '${v}'`);
    return n;
  };
}

/** Collects repeated `--dim NAME=SIZE` flags. */
export function dimBinding(v: string, prev: Record<string, number> = {}): Record<string, number> {
  const m = /^([^=]+)=(\d+)$/.exec(v);
  if (!m || Number(m[2]) < 1) throw new CleaveError(`--dim takes NAME=SIZE with a positive size, got '${v}'`);
  return { ...prev, [m[1]!]: Number(m[2]) };
}
