// Damage to a copy of a checkpoint folder (step-N folders of one shard per rank and a manifest):
// bit flips in a shard's header and in its data (weights, optimizer moments), truncation, offsets
// and fields edited in the JSON header, the header length, shards replaced by another step's or
// another run's, shards swapped or removed, the manifest edited or removed, stray files.
import { mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Rng } from './prng.js';

const MAGIC_LEN = 'CLEAVECKPT1\n'.length;

export interface CkptLayout { steps: number[]; ranks: number }
export interface CkptCase {
  desc: string;
  family: string;
  /** What to give --resume and export: the step folder or the whole checkpoint folder. */
  target: 'step' | 'dir';
  step: number;
}

const shard = (rank: number): string => `rank-${String(rank).padStart(5, '0')}.ckpt`;

interface Parsed { bytes: Buffer; headerLen: number; header: Record<string, unknown>; base: number }
function parse(file: string): Parsed {
  const bytes = readFileSync(file);
  const headerLen = bytes.readUInt32LE(MAGIC_LEN);
  const header = JSON.parse(bytes.subarray(MAGIC_LEN + 4, MAGIC_LEN + 4 + headerLen).toString('utf8')) as Record<string, unknown>;
  return { bytes, headerLen, header, base: MAGIC_LEN + 4 + headerLen };
}
/** Writes a shard with a new header, its data region as it was. */
function rewrite(file: string, p: Parsed, header: unknown): void {
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(h.length);
  writeFileSync(file, Buffer.concat([p.bytes.subarray(0, MAGIC_LEN), len, h, p.bytes.subarray(p.base)]));
}

type At = [number, number];
/** The data ranges of a shard's tensors and of its optimizer buffers (offsets from the data region's start). */
function regions(h: Record<string, unknown>): { weights: { name: string; at: At }[]; moments: { name: string; at: At }[] } {
  const weights = ((h['tensors'] as { name: string; at: At }[] | undefined) ?? []).map((t) => ({ name: t.name, at: t.at }));
  const bufs = ((h['optimizer'] as { buffers?: Record<string, Record<string, At>> } | undefined)?.buffers) ?? {};
  const moments = Object.entries(bufs).flatMap(([p, b]) => Object.entries(b).map(([k, at]) => ({ name: `${p}.${k}`, at })));
  return { weights, moments };
}

function flipBits(b: Buffer, from: number, to: number, r: Rng, n: number): number[] {
  const at: number[] = [];
  for (let i = 0; i < n && to > from; i++) { const p = r.range(from, to - 1); b[p]! ^= 1 << r.int(8); at.push(p); }
  return at;
}

/** Damages `ck` (a copy of the checkpoint folder) in place; `other` is a checkpoint folder of another run of the same plan. */
export function damageCheckpoint(r: Rng, ck: string, layout: CkptLayout, other: string): CkptCase {
  const step = r.weighted([[1, layout.steps[0]!], [3, layout.steps[layout.steps.length - 2] ?? layout.steps[0]!], [2, layout.steps.at(-1)!]] as const);
  const sd = join(ck, `step-${step}`);
  const rank = r.int(layout.ranks);
  const file = join(sd, shard(rank));
  const target: CkptCase['target'] = step === layout.steps.at(-1) && r.chance(0.5) ? 'dir' : 'step';
  const out = (family: string, desc: string): CkptCase => ({ family, desc: `step-${step}: ${desc}`, target, step });
  const p = parse(file);
  const { weights, moments } = regions(p.header);
  switch (r.int(22)) {
    case 0: { const at = flipBits(p.bytes, MAGIC_LEN + 4, p.base, r, r.range(1, 3)); writeFileSync(file, p.bytes); return out('header-bits', `${shard(rank)}: bit flip(s) in the JSON header at ${at.join(', ')}`); }
    case 1: case 2: { const w = r.pick(weights); const at = flipBits(p.bytes, p.base + w.at[0], p.base + w.at[0] + w.at[1], r, 1); writeFileSync(file, p.bytes); return out('weight-bits', `${shard(rank)}: one bit flipped in weight '${w.name}' (file byte ${at[0]})`); }
    case 3: case 4: { if (!moments.length) return damageCheckpoint(r, ck, layout, other); const m = r.pick(moments); const at = flipBits(p.bytes, p.base + m.at[0], p.base + m.at[0] + m.at[1], r, 1); writeFileSync(file, p.bytes); return out('moment-bits', `${shard(rank)}: one bit flipped in optimizer buffer '${m.name}' (file byte ${at[0]})`); }
    case 5: { const n = r.int(p.bytes.length); writeFileSync(file, p.bytes.subarray(0, n)); return out('truncate', `${shard(rank)}: truncated to ${n} of ${p.bytes.length} bytes`); }
    case 6: { const h = structuredClone(p.header) as { tensors: { at: At }[] }; const t = r.pick(h.tensors); const v = r.pick([-8, -1e9, 1e12, 2 ** 53, 0.5, p.bytes.length]); t.at[0] = v; rewrite(file, p, h); return out('header-offset', `${shard(rank)}: a tensor's offset set to ${v}`); }
    case 7: { const h = structuredClone(p.header) as { tensors: { at: At }[] }; const t = r.pick(h.tensors); const v = r.pick([-4, 0, t.at[1] - 4, t.at[1] + 4, 1e12, 3]); t.at[1] = v; rewrite(file, p, h); return out('header-length', `${shard(rank)}: a tensor's byte length set to ${v}`); }
    case 8: { const h = structuredClone(p.header) as { optimizer: { buffers: Record<string, Record<string, At>> } }; const m = Object.values(h.optimizer.buffers)[0]; if (!m) return damageCheckpoint(r, ck, layout, other); const k = Object.keys(m)[0]!; const v = r.pick([-16, 1e12, 1, 5]); m[k]![r.int(2)] = v; rewrite(file, p, h); return out('header-offset', `${shard(rank)}: an optimizer buffer's range field set to ${v}`); }
    case 9: { const h = structuredClone(p.header) as { tensors: { shape: number[]; dtype: string; name: string }[] }; const t = r.pick(h.tensors); const what = r.int(3); if (what === 0) t.shape = t.shape.map((d) => d * 2); else if (what === 1) t.dtype = r.pick(['float64', 'int64', 'bogus', 'float16']); else t.name = r.pick(['', 'renamed', h.tensors[0]!.name]); rewrite(file, p, h); return out('header-field', `${shard(rank)}: a tensor's ${['shape', 'dtype', 'name'][what]} changed`); }
    case 10: { const h = structuredClone(p.header) as Record<string, unknown>; const f = r.pick(['rank', 'step', 'optimizer.step', 'rng', 'place'] as const); if (f === 'optimizer.step') (h['optimizer'] as Record<string, unknown>)['step'] = r.pick([0, -1, 1e9]); else if (f === 'rng') h['rng'] = r.pick<unknown>([{}, null, { data: [], dropout: 'x' }, { data: [1, 2, 3], dropout: 0 }]); else if (f === 'place') h['place'] = r.pick<unknown>([null, { pp: 1, dp: 1, ppRank: 0, dpRank: 0 }, { pp: 2, dp: 2, ppRank: 5, dpRank: -1 }]); else h[f] = r.pick([-1, (h[f] as number) + 1, 1e9]); rewrite(file, p, h); return out('header-field', `${shard(rank)}: header ${f} changed`); }
    case 11: { const v = r.pick([0, 1, p.headerLen - 1, p.headerLen + 1, 2 ** 32 - 1, 2 ** 31]); p.bytes.writeUInt32LE(v >>> 0, MAGIC_LEN); writeFileSync(file, p.bytes); return out('header-size', `${shard(rank)}: header length field set to ${v} (was ${p.headerLen})`); }
    case 12: { const s2 = layout.steps.filter((s) => s !== step); const s = r.pick(s2); copyFileSync(join(ck, `step-${s}`, shard(rank)), file); return out('replaced', `${shard(rank)} replaced by step-${s}'s`); }
    case 13: { copyFileSync(join(other, `step-${step}`, shard(rank)), file); return out('replaced', `${shard(rank)} replaced by another run's (same plan, another seed) at the same step`); }
    case 14: { if (layout.ranks < 2) return damageCheckpoint(r, ck, layout, other); copyFileSync(join(sd, shard((rank + 1) % layout.ranks)), file); return out('replaced', `${shard(rank)} replaced by ${shard((rank + 1) % layout.ranks)}`); }
    case 15: { rmSync(file); return out('removed', `${shard(rank)} removed`); }
    case 16: { rmSync(join(sd, 'manifest.json')); return out('manifest', 'manifest.json removed'); }
    case 17: {
      const mf = join(sd, 'manifest.json');
      const m = JSON.parse(readFileSync(mf, 'utf8')) as Record<string, unknown>;
      const f = r.pick(['step', 'world', 'shards', 'format', 'version', 'plan', 'model', 'pp', 'dp', 'shards-order', 'shards-path'] as const);
      if (f === 'step') m['step'] = r.pick([0, -1, step - 1, step + 1, 1e9, 1.5]);
      else if (f === 'world') m['world'] = r.pick([0, 1, 3, 4096, -1]);
      else if (f === 'shards') m['shards'] = r.pick<unknown>([[], [shard(0)], [...(m['shards'] as string[]), shard(7)], null, 'rank-00000.ckpt']);
      else if (f === 'shards-order') m['shards'] = [...(m['shards'] as string[])].reverse();
      else if (f === 'shards-path') m['shards'] = (m['shards'] as string[]).map((s, i) => (i === 0 ? r.pick([`../step-${layout.steps[0]}/${s}`, `/etc/passwd`, `${s}/`, '']) : s));
      else if (f === 'format') m['format'] = 'bogus';
      else if (f === 'version') m['version'] = r.pick([0, 2, '1']);
      else if (f === 'plan') m['plan'] = r.pick(['/nonexistent.plan', '', 42]);
      else if (f === 'model') m['model'] = r.pick(['/nonexistent.onnx', '', join(ck, '..', 'cnn.onnx')]);
      else m[f] = r.pick([0, 3, -1, 'x']);
      writeFileSync(mf, JSON.stringify(m));
      return out('manifest', `manifest ${f} set to ${JSON.stringify(m[f === 'shards-order' || f === 'shards-path' ? 'shards' : f])}`);
    }
    case 18: { writeFileSync(join(sd, 'manifest.json'), r.pick(['', '{', 'null', '[]', '{"format":"cleave-checkpoint","version":1}'])); return out('manifest', `manifest.json replaced by '${readFileSync(join(sd, 'manifest.json'), 'utf8')}'`); }
    case 19: {
      const what = r.int(5);
      if (what === 0) writeFileSync(join(sd, `${shard(rank)}.tmp`), Buffer.from('partial'));
      else if (what === 1) mkdirSync(join(ck, 'step-99'));
      else if (what === 2) { mkdirSync(join(ck, 'step-98')); writeFileSync(join(ck, 'step-98', 'manifest.json'), readFileSync(join(sd, 'manifest.json'))); }
      else if (what === 3) writeFileSync(join(ck, 'step-97'), 'a file, not a folder');
      else mkdirSync(join(ck, 'step-abc'));
      return { family: 'stray', desc: ['a .tmp file beside the shards', 'an empty step-99 folder', 'a step-98 folder with a manifest and no shards', 'a file named step-97', 'a step-abc folder'][what]!, target: what === 0 ? target : 'dir', step };
    }
    case 20: { rmSync(file); const link = r.chance(0.5); if (link) symlinkSync('/dev/zero', file); else mkdirSync(file); return out('not-a-file', `${shard(rank)} replaced by ${link ? 'a symlink to /dev/zero' : 'a folder'}`); }
    default: { for (const f of readdirSync(sd)) if (f.endsWith('.ckpt')) writeFileSync(join(sd, f), Buffer.alloc(0)); return out('truncate', 'every shard emptied (0 bytes)'); }
  }
}
