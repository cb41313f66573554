/** Human units for tables: counts with separators, bytes in KiB/MiB/GiB, FLOPs in k/M/G/T. */
export const formatCount = (n: number): string => n.toLocaleString('en-US');

export function formatBytes(b: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) {
    b /= 1024;
    i++;
  }
  return i === 0 ? `${b} B` : `${b.toFixed(b >= 100 ? 0 : 1)} ${units[i]}`;
}

export function formatFlops(f: number): string {
  const units = ['FLOP', 'kFLOP', 'MFLOP', 'GFLOP', 'TFLOP', 'PFLOP'];
  let i = 0;
  while (f >= 1000 && i < units.length - 1) {
    f /= 1000;
    i++;
  }
  return i === 0 ? `${f} FLOP` : `${f.toFixed(f >= 100 ? 0 : f >= 10 ? 1 : 2)} ${units[i]}`;
}

export const formatPercent = (x: number): string => `${(100 * x).toFixed(1)}%`;

/**
 * An aligned text table. Columns whose every cell looks numeric are right-aligned.
 */
export function table(header: readonly string[], rows: readonly (readonly string[])[], indent = '  '): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const numeric = header.map((_, c) => rows.length > 0 && rows.every((r) => /^[-+]?[\d,.]+(\s?\S+)?%?$|^—$/.test(r[c] ?? '')));
  const line = (cells: readonly string[]): string =>
    indent + cells.map((cell, c) => (numeric[c] ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}
