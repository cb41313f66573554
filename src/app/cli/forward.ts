import type { Command } from 'commander';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { importModel } from '../../../compiler/onnx/import.js';
import { readModelFile } from '../../core/onnx/codec.js';
import { runGraph } from '../../../runtime/backends/cpu/interpreter.js';
import { readNpy, writeNpy } from '../../../runtime/data/npy.js';
import { CleaveError } from '../../core/errors.js';
import type { Tensor } from '../../core/ir/tensor.js';
import { dirname } from 'node:path';
import { formatShape } from '../../core/ir/shape.js';
import { table } from '../../core/util/format.js';
import { dimBinding } from './options.js';
import { checkOutputDir } from './paths.js';

export interface TensorSummary { name: string; dtype: string; shape: number[]; min: number; max: number; mean: number; std: number; file?: string }

export function summarizeTensor(name: string, t: Tensor): TensorSummary {
  let min = Infinity, max = -Infinity, sum = 0, sq = 0;
  for (const x of t.data) {
    if (x < min) min = x;
    if (x > max) max = x;
    sum += x;
    sq += x * x;
  }
  const n = t.data.length || 1;
  const mean = sum / n;
  return { name, dtype: t.dtype, shape: [...t.shape], min, max, mean, std: Math.sqrt(Math.max(0, sq / n - mean * mean)) };
}

function parseInput(v: string, prev: Record<string, string> = {}): Record<string, string> {
  const k = v.indexOf('=');
  if (k <= 0) throw new CleaveError(`--input takes NAME=FILE.npy, got '${v}'`);
  return { ...prev, [v.slice(0, k)]: v.slice(k + 1) };
}

/** Imports with the batch the feeds carry, runs on the CPU backend, returns outputs by name. */
export function forwardModel(file: string, feeds: Record<string, Tensor>, dims?: Record<string, number>): Map<string, Tensor> {
  const model = readModelFile(file);
  const names = (model.graph?.input ?? []).map((vi) => vi.name ?? '').filter((n) => !(model.graph?.initializer ?? []).some((t) => t.name === n));
  const unknown = Object.keys(feeds).find((k) => !names.includes(k));
  if (unknown !== undefined) throw new CleaveError(`--input ${unknown}: ${file} has no input '${unknown}' (its inputs: ${names.join(', ')})`);
  const first = model.graph?.input?.find((vi) => feeds[vi.name ?? '']);
  const batch = first ? feeds[first.name!]!.shape[0] : undefined;
  const g = importModel(model, { baseDir: dirname(file), file }, { batch, dims });
  return runGraph(g, feeds);
}

const fileName = (name: string): string => name.replace(/[^A-Za-z0-9_.-]+/g, '_');

export function registerForward(program: Command): void {
  program
    .command('forward')
    .description('run a model on the CPU reference backend with inputs from .npy files')
    .argument('<model>', 'ONNX model file')
    .option('--input <name=file.npy>', 'an input (repeatable)', parseInput)
    .option('--dim <name=size>', 'bind a named symbolic dimension (repeatable)', dimBinding)
    .option('--out <dir>', 'write each output as DIR/NAME.npy')
    .option('--json', 'print the summary as JSON')
    .action((model: string, o: { input?: Record<string, string>; dim?: Record<string, number>; out?: string; json?: boolean }) => {
      checkOutputDir('--out', o.out);
      const feeds: Record<string, Tensor> = {};
      for (const [name, f] of Object.entries(o.input ?? {})) feeds[name] = readNpy(f);
      const outs = forwardModel(model, feeds, o.dim);
      if (o.out) mkdirSync(o.out, { recursive: true });
      const rows: TensorSummary[] = [];
      for (const [name, t] of outs) {
        const s = summarizeTensor(name, t);
        if (o.out) writeNpy((s.file = join(o.out, `${fileName(name)}.npy`)), t);
        rows.push(s);
      }
      if (o.json) {
        process.stdout.write(JSON.stringify({ outputs: rows }, null, 2) + '\n');
        return;
      }
      const num = (x: number) => (Number.isInteger(x) && Math.abs(x) < 1e9 ? String(x) : x.toPrecision(5));
      process.stdout.write(table(['output', 'dtype', 'shape', 'min', 'max', 'mean', 'std', ...(o.out ? ['file'] : [])],
        rows.map((r) => [r.name, r.dtype, formatShape(r.shape), num(r.min), num(r.max), num(r.mean), num(r.std), ...(r.file ? [r.file] : [])])) + '\n');
    });
}
