import { CleaveError } from '../../src/core/errors.js';
import type { AttrValue } from '../../src/core/ir/graph.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import type { AttrType } from '../../src/core/ops/index.js';
import type { AttributeP } from '../../src/core/onnx/proto.js';
import { ATTR } from '../../src/core/onnx/schema.js';
import { type TensorSource, tensorFromProto, tensorToProto } from '../../src/core/onnx/tensors.js';

const utf8 = new TextDecoder();
const toUtf8 = new TextEncoder();

/** Infers the type of attributes written without one (old exporters leave `type` unset). */
function typeOf(a: AttributeP): number {
  if (a.type) return a.type;
  if (a.t) return ATTR.TENSOR;
  if (a.g) return ATTR.GRAPH;
  if (a.s && a.s.length) return ATTR.STRING;
  if (a.floats?.length) return ATTR.FLOATS;
  if (a.ints?.length) return ATTR.INTS;
  if (a.strings?.length) return ATTR.STRINGS;
  if (a.f !== undefined) return ATTR.FLOAT;
  return ATTR.INT;
}

export function decodeAttr(a: AttributeP, src: TensorSource, where: string): AttrValue {
  switch (typeOf(a)) {
    case ATTR.FLOAT: return a.f ?? 0;
    case ATTR.INT: return Number(a.i ?? 0);
    case ATTR.STRING: return utf8.decode(a.s ?? new Uint8Array());
    case ATTR.FLOATS: return a.floats ?? [];
    case ATTR.INTS: return (a.ints ?? []).map(Number);
    case ATTR.STRINGS: return (a.strings ?? []).map((s) => utf8.decode(s));
    case ATTR.TENSOR: {
      // tensorFromProto names the file itself.
      const at = where.startsWith(`${src.file}: `) ? where.slice(src.file.length + 2) : where;
      return tensorFromProto(a.t ?? {}, src, `${at}, attribute '${a.name}'`);
    }
    default: throw new CleaveError(`${where}: attribute '${a.name}' has a type cleave does not support (graphs, sparse tensors and type protos are not supported)`);
  }
}

export function encodeAttr(name: string, v: AttrValue, type: AttrType): AttributeP {
  switch (type) {
    case 'float': return { name, type: ATTR.FLOAT, f: v as number };
    case 'int': case 'dtype': return { name, type: ATTR.INT, i: v as number };
    case 'string': return { name, type: ATTR.STRING, s: toUtf8.encode(v as string) };
    case 'floats': return { name, type: ATTR.FLOATS, floats: [...(v as number[])] };
    case 'ints': return { name, type: ATTR.INTS, ints: [...(v as number[])] };
    case 'strings': return { name, type: ATTR.STRINGS, strings: (v as string[]).map((s) => toUtf8.encode(s)) };
    case 'tensor': return { name, type: ATTR.TENSOR, t: tensorToProto('', v as Tensor) };
  }
}

/** Attribute values compared for equality with defaults (arrays element by element). */
export function attrEquals(a: AttrValue, b: AttrValue): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => x === b[i]);
  return a === b;
}
