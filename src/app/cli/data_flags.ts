import { CleaveError } from '../../core/errors.js';

/** `--data` and `--tokens` as `train` and `run` take them: `--tokens` describes a .bin file, so it needs one. */
export function dataFlags(o: { data?: string; tokens?: string }): { path?: string; tokenType: 'uint16' | 'int32' } {
  if (o.tokens !== undefined && o.tokens !== 'uint16' && o.tokens !== 'int32') throw new CleaveError(`--tokens must be uint16 or int32; got '${o.tokens}'`);
  if (o.tokens !== undefined && !o.data?.endsWith('.bin')) throw new CleaveError(`--tokens ${o.tokens} describes a .bin token file given with --data${o.data ? `; ${o.data} is not one` : ''}`);
  return { path: o.data, tokenType: (o.tokens ?? 'uint16') as 'uint16' | 'int32' };
}
