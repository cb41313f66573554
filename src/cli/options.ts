import { CleaveError } from '../errors.js';

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
