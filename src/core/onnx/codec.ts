import { readFileSync, statSync } from 'node:fs';
import { CleaveError } from '../errors.js';
import type { ModelP } from './proto.js';
import { ModelProtoType } from './schema.js';

/** Reads and decodes an ONNX file; every failure names the file and says what is wrong with it. */
export function readModelFile(file: string): ModelP {
  let bytes: Uint8Array;
  try {
    if (statSync(file).isDirectory()) throw new CleaveError(`${file}: is a directory, not an ONNX model file`);
    bytes = readFileSync(file);
  } catch (e) {
    if (e instanceof CleaveError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new CleaveError(code === 'ENOENT' ? `${file}: no such file` : `${file}: cannot be read (${(e as Error).message})`);
  }
  return decodeModel(bytes, file);
}

/** The bytes each decoded model was decoded from: its initializers' raw_data are views into them. */
const SOURCE = new WeakMap<ModelP, Uint8Array>();

/** Where `view` lies in the bytes `model` was decoded from (a byte range of its file), if it lies there. */
export function offsetInSource(model: ModelP, view: Uint8Array): number | undefined {
  const src = SOURCE.get(model);
  if (!src || view.buffer !== src.buffer) return undefined;
  const at = view.byteOffset - src.byteOffset;
  return at >= 0 && at + view.byteLength <= src.byteLength ? at : undefined;
}

export function decodeModel(bytes: Uint8Array, file: string): ModelP {
  if (bytes.byteLength === 0) throw new CleaveError(`${file}: is empty, not an ONNX model`);
  let model: ModelP;
  try {
    const msg = ModelProtoType.decode(bytes);
    model = ModelProtoType.toObject(msg, { longs: Number }) as ModelP;
  } catch (e) {
    const why = (e as Error).message;
    // protobufjs reports running off the end as "index out of range"; anything else is not protobuf.
    if (/index out of range/.test(why)) throw new CleaveError(`${file}: is truncated or corrupt (the protobuf ends in the middle of a field: ${why})`);
    throw new CleaveError(`${file}: is not an ONNX model (not a valid protobuf: ${why})`);
  }
  if (!model.graph || !model.irVersion) {
    throw new CleaveError(`${file}: is not an ONNX model (no ${model.graph ? 'ir_version' : 'graph'} field)`);
  }
  SOURCE.set(model, bytes);
  return model;
}

export function encodeModel(model: ModelP): Uint8Array {
  return ModelProtoType.encode(ModelProtoType.fromObject(model)).finish();
}
