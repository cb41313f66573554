// Writes native/src/op_codes.h from the registry's table of native op codes (the TypeScript build's copy).
import { writeFileSync } from 'node:fs';
import { nativeCodesHeader } from '../dist/src/core/ops/native_codes.js';

const out = new URL('./src/op_codes.h', import.meta.url);
writeFileSync(out, nativeCodesHeader());
console.log(`wrote ${out.pathname}`);
