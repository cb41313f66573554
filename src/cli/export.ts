import type { Command } from 'commander';
import { dirname } from 'node:path';
import { readModelFile } from '../../compiler/onnx/codec.js';
import { writeOnnx } from '../../compiler/onnx/export.js';
import { importModel } from '../../compiler/onnx/import.js';
import { readManifest, readShard } from '../../runtime/checkpoint/checkpoint.js';
import { CleaveError, SymbolicDimError } from '../errors.js';
import type { Graph } from '../ir/graph.js';
import type { Tensor } from '../ir/tensor.js';

/** Gathers a checkpoint's shards back into the full model and writes it as one ONNX file. */
export function exportCheckpoint(dir: string, out: string): { tensors: number; step: number } {
  const m = readManifest(dir);
  const tensors = new Map<string, Tensor>();
  for (let r = 0; r < m.world; r++) for (const [k, t] of readShard(dir, r).tensors) if (!tensors.has(k)) tensors.set(k, t);
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
  return { tensors: tensors.size, step: m.step };
}

export function registerExport(program: Command): void {
  program
    .command('export')
    .description('gather a checkpoint into one ONNX model')
    .argument('<checkpoint>', 'checkpoint folder (with manifest.json)')
    .requiredOption('-o, --out <file>', 'the ONNX file to write')
    .action((dir: string, o: { out: string }) => {
      const r = exportCheckpoint(dir, o.out);
      process.stdout.write(`wrote ${o.out}: ${r.tensors} tensors at step ${r.step}\n`);
    });
}
