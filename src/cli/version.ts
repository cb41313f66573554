import { readFileSync } from 'node:fs';

/** cleave's version, from its own package.json (two folders above this file, in src/ and in dist/src/). */
function packageVersion(): string {
  for (const up of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'cleave' && pkg.version) return pkg.version;
    } catch {
      // Not this level: try the next.
    }
  }
  return 'unknown';
}

export const VERSION = packageVersion();
