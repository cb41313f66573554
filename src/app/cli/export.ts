import type { Command } from 'commander';
import { dirname } from 'node:path';
import { readModelFile } from '../../core/onnx/codec.js';
import { writeOnnx } from '../../../compiler/onnx/export.js';
import { importModel } from '../../../compiler/onnx/import.js';
import { openCheckpoint, resolveCheckpoint } from '../../../runtime/checkpoint/resume.js';
import { CleaveError, SymbolicDimError } from '../../core/errors.js';
import type { Graph } from '../../core/ir/graph.js';
import type { Tensor } from '../../core/ir/tensor.js';
import { checkOutputFile } from './paths.js';

/**
 * Gathers a checkpoint's shards back into the full model and writes it as one ONNX file. `path`: a
 * step-N folder, or a --checkpoint-dir (its newest complete step; `note` says which).
 */
export function exportCheckpoint(path: string, out: string): { tensors: number; step: number; dir: string; note?: string; warnings?: string[] } {
  const { dir, note } = resolveCheckpoint(path);
  // Every shard's header, identity and listed checksum checked here, each one's bytes as it is read.
  const ck = openCheckpoint(dir, 'export');
  ck.verifyListed();
  const m = ck.manifest;
  // Each tensor from the lowest rank holding it: tied and replicated copies are updated alike.
  const tensors = new Map<string, Tensor>();
  for (let r = 0; r < m.world; r++) {
    if (!ck.headers[r]!.tensors.some((t) => !tensors.has(t.name))) continue;
    for (const [k, t] of ck.shard(r).tensors) if (!tensors.has(k)) tensors.set(k, t);
  }
  const model = readModelFile(m.model);
  const src = { baseDir: dirname(m.model), file: m.model };
  let g: Graph;
  try {
    g = importModel(model, src);
  } catch (e) {
    if (!(e instanceof SymbolicDimError)) throw e;
    g = importModel(model, src, { batch: 1 });
  }
  for (const v of [...g.params(), ...g.states()]) {
    const t = tensors.get(v.name);
    if (!t) throw new CleaveError(`${dir}: no shard holds '${v.name}'`);
    v.data = t;
  }
  writeOnnx(g, out);
  return { tensors: tensors.size, step: m.step, dir, ...(note ? { note } : {}), ...(ck.warnings.length ? { warnings: ck.warnings } : {}) };
}

export function registerExport(program: Command): void {
  program
    .command('export')
    .description('gather a checkpoint into one ONNX model')
    .argument('<checkpoint>', 'checkpoint: a step-N folder (with manifest.json), or the --checkpoint-dir holding them (its newest complete step)')
    .requiredOption('-o, --out <file>', 'the ONNX file to write')
    .option('--json', 'print what was written as one JSON object')
    .action((dir: string, o: { out: string; json?: boolean }) => {
      checkOutputFile('-o', o.out);
      const r = exportCheckpoint(dir, o.out);
      for (const w of r.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
      if (o.json) {
        process.stdout.write(JSON.stringify({ out: o.out, checkpoint: r.dir, step: r.step, tensors: r.tensors, note: r.note ?? null, ...(r.warnings ? { warnings: r.warnings } : {}) }) + '\n');
        return;
      }
      if (r.note) process.stdout.write(`note: ${r.note}\n`);
      process.stdout.write(`wrote ${o.out}: ${r.tensors} tensors at step ${r.step} (${r.dir})\n`);
    });
}
