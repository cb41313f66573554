import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURES = fileURLToPath(new URL('../../fixtures/', import.meta.url));

export const BUILT = ['mlp', 'gpt', 'cnn', 'gpt_external'] as const;
export const TORCH = ['torch_mlp', 'torch_gpt', 'torch_cnn'] as const;

export const fixturePath = (name: string): string =>
  name.startsWith('torch_') ? join(FIXTURES, 'torch', `${name}.onnx`) : join(FIXTURES, `${name}.onnx`);

/** Parameter counts PyTorch reported when it exported the torch fixtures. */
export const torchParamCounts = (): Record<string, number> => JSON.parse(readFileSync(join(FIXTURES, 'torch', 'params.json'), 'utf8'));
