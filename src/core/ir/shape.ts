import { CleaveError, SymbolicDimError } from '../errors.js';

/** A dimension: a size, or a symbol (such as the batch) that is bound when the microbatch size is fixed. */
export type Dim = number | string;
export type Shape = readonly Dim[];

export const isStatic = (s: Shape): s is readonly number[] => s.every((d) => typeof d === 'number');

export function formatShape(s: Shape): string {
  return `[${s.join(', ')}]`;
}

/** Number of elements; symbolic dims count as `symbolValue` when given, else it throws. */
export function numel(s: Shape, symbolValue?: number): number {
  let n = 1;
  for (const d of s) {
    if (typeof d === 'number') n *= d;
    else if (symbolValue !== undefined) n *= symbolValue;
    else throw new SymbolicDimError(`shape ${formatShape(s)} has the symbolic dimension '${d}'`);
  }
  return n;
}

export function staticShape(s: Shape, where: string): number[] {
  for (const d of s) {
    if (typeof d !== 'number') {
      throw new SymbolicDimError(`${where}: needs a static shape but ${formatShape(s)} has the symbolic dimension '${d}' (fix it with --batch or --dim)`);
    }
  }
  return s as number[];
}

export const shapesEqual = (a: Shape, b: Shape): boolean => a.length === b.length && a.every((d, i) => d === b[i]);

/** Resolves a possibly negative axis; `rank` is the tensor's rank (plus one for insertion axes). */
export function normAxis(axis: number, rank: number, where: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank || !Number.isInteger(a)) {
    throw new CleaveError(`${where}: axis ${axis} is out of range for rank ${rank}`);
  }
  return a;
}

/** NumPy-style broadcasting; an error names the node and both shapes. */
export function broadcast(shapes: readonly Shape[], where: string): Dim[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let dim: Dim = 1;
    for (const s of shapes) {
      const d = s[s.length - rank + i];
      if (d === undefined || d === 1) continue;
      if (dim === 1) dim = d;
      else if (dim !== d) {
        // A symbol against a size: take the size, as ONNX shape inference does when merging.
        if (typeof dim === 'string' && typeof d === 'number') dim = d;
        else if (typeof dim === 'number' && typeof d === 'string') continue;
        else {
          throw new CleaveError(`${where}: shapes ${shapes.map(formatShape).join(' and ')} do not broadcast (dimension ${i - rank} is ${dim} vs ${d})`);
        }
      }
    }
    out.push(dim);
  }
  return out;
}

export function stridesOf(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= shape[i]!;
  }
  return st;
}
