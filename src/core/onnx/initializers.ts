import { dirname } from 'node:path';
import { CleaveError } from '../errors.js';
import type { Tensor } from '../ir/tensor.js';
import { readModelFile } from './codec.js';
import { tensorFromProto } from './tensors.js';

const listed = (names: readonly string[]): string => {
  const shown = names.slice(0, 5).map((n) => `'${n}'`).join(', ');
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
};

/**
 * Initializers of an ONNX file by name, decoded as the importer decodes them (raw bytes, typed
 * fields or external data beside the file), without building its graph. Every name must be there.
 */
export function readInitializers(file: string, names: readonly string[]): Map<string, Tensor> {
  const model = readModelFile(file);
  const byName = new Map((model.graph!.initializer ?? []).map((t) => [t.name ?? '', t]));
  const missing = names.filter((n) => !byName.has(n));
  if (missing.length) throw new CleaveError(`${file}: has no initializer ${listed(missing)}, which the plan trains (${missing.length} of ${names.length} missing): give the model the plan was compiled from, or one with the same parameters`);
  const src = { baseDir: dirname(file), file };
  return new Map(names.map((n) => [n, tensorFromProto(byName.get(n)!, src, `initializer '${n}'`)]));
}
