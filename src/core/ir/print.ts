import type { AttrValue, Graph, Node } from './graph.js';
import { formatShape } from './shape.js';
import type { Tensor } from './tensor.js';

function formatAttr(v: AttrValue): string {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)));
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => formatAttr(x as number | string)).join(', ')}]`;
  const t = v as Tensor;
  return t.data.length <= 8 ? `${t.dtype}${formatShape(t.shape)}{${Array.from(t.data).join(', ')}}` : `<${t.dtype}${formatShape(t.shape)}>`;
}

export function formatNode(n: Node): string {
  const outs = n.outputs.map((o) => `%${o.name}`).join(', ');
  const ins = n.inputs.map((v) => (v ? `%${v.name}` : '_')).join(', ');
  const attrs = Object.entries(n.attrs);
  const a = attrs.length ? ` {${attrs.map(([k, v]) => `${k}: ${formatAttr(v)}`).join(', ')}}` : '';
  const types = n.outputs.map((o) => o.type).join(', ');
  const part = n.meta.partition !== undefined ? `  @stage ${n.meta.partition}` : '';
  return `${outs} = ${n.op}(${ins})${a} : ${types}${part}`;
}

/** One line per value and node, in order: diffable, readable, stable across runs. */
export function printGraph(g: Graph): string {
  const lines = [`graph ${g.name} (opset ${g.opset})`];
  for (const v of g.inputs) lines.push(`  input  %${v.name} : ${v.type}`);
  for (const v of g.params()) lines.push(`  param  %${v.name} : ${v.type}`);
  for (const v of g.states()) lines.push(`  state  %${v.name} : ${v.type}`);
  for (const v of g.constants()) lines.push(`  const  %${v.name} : ${v.type}`);
  for (const n of g.nodes) lines.push(`  ${formatNode(n)}`);
  lines.push(`  return ${g.outputs.map((v) => `%${v.name}`).join(', ')}`);
  return lines.join('\n') + '\n';
}
