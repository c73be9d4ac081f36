// Hand-written SVG: horizontal grouped bar charts on a log scale (latencies
// span microseconds to seconds), each bar labelled with its value.

export interface Series {
  name: string;
  color: string;
}

export interface BarGroup {
  label: string;
  /** One value per series (same order); null = not measured. */
  values: (number | null)[];
}

export interface BarChart {
  title: string;
  unit: string;
  series: Series[];
  groups: BarGroup[];
}

const ROW = 16;
const GAP = 10;
const LABEL_W = 190;
const PLOT_W = 430;
const VALUE_W = 90;
const TOP = 48;

function esc(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

export function formatValue(value: number, unit: string): string {
  if (unit === 'ms') {
    if (value >= 1000) return `${(value / 1000).toFixed(value >= 10_000 ? 0 : 1)} s`;
    if (value >= 10) return `${value.toFixed(0)} ms`;
    if (value >= 1) return `${value.toFixed(1)} ms`;
    return `${(value * 1000).toFixed(0)} µs`;
  }
  return `${value.toPrecision(3)} ${unit}`;
}

/** Powers of ten covering the values. */
function decades(values: number[]): [number, number] {
  const positive = values.filter((v) => v > 0);
  const lo = Math.floor(Math.log10(Math.min(...positive, 1)));
  const hi = Math.ceil(Math.log10(Math.max(...positive, 10)));
  return [lo, hi === lo ? lo + 1 : hi];
}

/** Drops series without any value, so shapes without (say) a probe cluster get no empty rows. */
function compact(chart: BarChart): BarChart {
  const keep = chart.series.map((_, i) => chart.groups.some((g) => g.values[i] !== null && g.values[i] !== undefined));
  return {
    ...chart,
    series: chart.series.filter((_, i) => keep[i]),
    groups: chart.groups.map((g) => ({ label: g.label, values: g.values.filter((_, i) => keep[i]) })),
  };
}

export function renderBarChart(input: BarChart): string {
  const chart = compact(input);
  const values = chart.groups.flatMap((g) => g.values.filter((v): v is number => v !== null && v > 0));
  const [lo, hi] = decades(values);
  const x = (v: number) => LABEL_W + ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo)) * PLOT_W;
  const groupH = chart.series.length * ROW + GAP;
  const height = TOP + chart.groups.length * groupH + 40;
  const width = LABEL_W + PLOT_W + VALUE_W;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="18" font-size="14" font-weight="bold">${esc(chart.title)}</text>`,
  ];
  chart.series.forEach((s, i) => {
    const lx = LABEL_W + i * 150;
    out.push(`<rect x="${lx}" y="28" width="10" height="10" fill="${s.color}"/><text x="${lx + 14}" y="37">${esc(s.name)}</text>`);
  });
  for (let d = lo; d <= hi; d++) {
    const gx = x(10 ** d);
    out.push(`<line x1="${gx}" y1="${TOP - 4}" x2="${gx}" y2="${height - 34}" stroke="#ddd"/>`);
    out.push(`<text x="${gx}" y="${height - 22}" text-anchor="middle" fill="#555">${esc(formatValue(10 ** d, chart.unit))}</text>`);
  }
  out.push(`<text x="${LABEL_W + PLOT_W / 2}" y="${height - 6}" text-anchor="middle" fill="#555">log scale, ${esc(chart.unit)}</text>`);
  chart.groups.forEach((g, gi) => {
    const gy = TOP + gi * groupH;
    out.push(`<text x="${LABEL_W - 6}" y="${gy + (chart.series.length * ROW) / 2 + 4}" text-anchor="end">${esc(g.label)}</text>`);
    g.values.forEach((v, si) => {
      const y = gy + si * ROW;
      const color = chart.series[si]?.color ?? '#888';
      if (v === null || !(v > 0)) return; // not applicable to this group
      const w = Math.max(1, x(v) - LABEL_W);
      out.push(`<rect x="${LABEL_W}" y="${y + 1}" width="${w.toFixed(1)}" height="${ROW - 3}" fill="${color}"/>`);
      out.push(`<text x="${(LABEL_W + w + 4).toFixed(1)}" y="${y + 11}">${esc(formatValue(v, chart.unit))}</text>`);
    });
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
