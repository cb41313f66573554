import { CleaveError } from '../../src/core/errors.js';
import type { AttributeP, FunctionP, NodeP } from '../../src/core/onnx/proto.js';

const key = (domain: string | undefined, name: string | undefined): string => `${domain ?? ''}:${name ?? ''}`;

/**
 * Replaces every call of a model-local function by the function's body, recursively. Inner values
 * and nodes get the call's name as a prefix so they stay unique; attribute references resolve to
 * the call's attributes or the function's defaults.
 */
export function inlineFunctions(nodes: readonly NodeP[], functions: readonly FunctionP[], file: string): NodeP[] {
  const table = new Map(functions.map((f) => [key(f.domain, f.name), f]));
  if (!table.size) return [...nodes];
  let counter = 0;
  const expand = (list: readonly NodeP[], depth: number, stack: string[]): NodeP[] => {
    const out: NodeP[] = [];
    for (const n of list) {
      const f = table.get(key(n.domain, n.opType));
      if (!f) {
        out.push(n);
        continue;
      }
      const fname = key(f.domain, f.name);
      if (stack.includes(fname)) throw new CleaveError(`${file}: function ${fname} calls itself (${[...stack, fname].join(' → ')})`);
      const prefix = `${n.name || `${f.name}_${counter++}`}/`;
      const rename = new Map<string, string>();
      (f.input ?? []).forEach((v, i) => rename.set(v, n.input?.[i] ?? ''));
      (f.output ?? []).forEach((v, i) => rename.set(v, n.output?.[i] ?? `${prefix}${v}`));
      const mapName = (v: string): string => (v === '' ? '' : rename.get(v) ?? `${prefix}${v}`);
      const callAttrs = new Map((n.attribute ?? []).map((a) => [a.name ?? '', a]));
      const defaults = new Map((f.attributeProto ?? []).map((a) => [a.name ?? '', a]));
      const body: NodeP[] = (f.node ?? []).map((inner, i) => ({
        ...inner,
        name: `${prefix}${inner.name || `${inner.opType}_${i}`}`,
        input: (inner.input ?? []).map(mapName),
        output: (inner.output ?? []).map(mapName),
        attribute: (inner.attribute ?? []).flatMap((a): AttributeP[] => {
          if (!a.refAttrName) return [a];
          const given = callAttrs.get(a.refAttrName) ?? defaults.get(a.refAttrName);
          return given ? [{ ...given, name: a.name }] : [];
        }),
      }));
      if (depth > 64) throw new CleaveError(`${file}: functions nest more than 64 deep`);
      out.push(...expand(body, depth + 1, [...stack, fname]));
    }
    return out;
  };
  return expand(nodes, 0, []);
}
