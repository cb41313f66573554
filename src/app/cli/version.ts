import { readFileSync } from 'node:fs';

/** cleave's version, from its own package.json (three folders above this file, in src/app/cli and in dist/src/app/cli). */
function packageVersion(): string {
  for (const up of ['../../../package.json', '../../../../package.json']) {
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
