// Inline SVG charts (no library, no CDN): bars per bucket, lines over time, horizontal
// bars and a semicircle gauge. Each returns an <svg> element that scales to its box.

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function frame(w, hgt, label) {
  return s('svg', { viewBox: `0 0 ${w} ${hgt}`, class: 'chart', role: 'img', 'aria-label': label, preserveAspectRatio: 'none' });
}

/** Vertical bars, one per value; `labels[i]` under every few bars. */
export function bars(values, labels, label) {
  const w = 320, hgt = 120, pad = 18;
  const svg = frame(w, hgt, label);
  const max = Math.max(1, ...values);
  const bw = (w - 8) / Math.max(1, values.length);
  values.forEach((v, i) => {
    const bh = ((hgt - pad - 14) * v) / max;
    const x = 4 + i * bw;
    const bar = s('rect', { x: x + 1, y: hgt - pad - bh, width: Math.max(1, bw - 2), height: bh, class: 'bar' });
    bar.append(s('title', {}, `${labels[i] ?? ''}: ${v}`));
    svg.append(bar);
    if (v > 0) svg.append(s('text', { x: x + bw / 2, y: hgt - pad - bh - 3, class: 'val' }, v));
    const every = Math.ceil(values.length / 7);
    if (i % every === 0) svg.append(s('text', { x: x + bw / 2, y: hgt - 4, class: 'tick' }, labels[i] ?? ''));
  });
  svg.append(s('line', { x1: 0, x2: w, y1: hgt - pad, y2: hgt - pad, class: 'axis' }));
  return svg;
}

/** Lines over the same buckets: `series = [{ name, values, cls }]`. */
export function lines(series, labels, label) {
  const w = 320, hgt = 120, pad = 18;
  const svg = frame(w, hgt, label);
  const n = Math.max(1, ...series.map((x) => x.values.length));
  const max = Math.max(1, ...series.flatMap((x) => x.values));
  const x = (i) => 16 + (i * (w - 32)) / Math.max(1, n - 1); // room for the first and last day's label
  const y = (v) => hgt - pad - ((hgt - pad - 10) * v) / max;
  for (const line of series) {
    const d = line.values.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(s('path', { d, class: `line ${line.cls}` }));
    line.values.forEach((v, i) => {
      const dot = s('circle', { cx: x(i), cy: y(v), r: 2.2, class: `dot ${line.cls}` });
      dot.append(s('title', {}, `${line.name} ${labels[i] ?? ''}: ${v}`));
      svg.append(dot);
    });
  }
  const every = Math.ceil(n / 7);
  for (let i = 0; i < n; i += every) svg.append(s('text', { x: x(i), y: hgt - 4, class: 'tick' }, labels[i] ?? ''));
  svg.append(s('line', { x1: 0, x2: w, y1: hgt - pad, y2: hgt - pad, class: 'axis' }));
  svg.append(s('text', { x: 2, y: 10, class: 'tick start' }, max));
  return svg;
}

/** A round upper bound for an axis: 1, 2, 2.5 or 5 times a power of ten, at least `v`. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

/**
 * Readings over time, `points = [{ t, v }]`, on a time axis (times under it) with the
 * value range and its `unit` beside the value axis. `opts.from`/`opts.to` fix the time
 * axis (else the points' own range); `opts.marker` draws a dashed line at that time with
 * `opts.markerLabel` (the finding). Readings that share a moment are spread a little so
 * that each stays visible.
 */
export function timeline(points, label, fmt, unit = '', opts = {}) {
  const w = 320, hgt = 140, pad = 30, left = 36, right = 12;
  const svg = frame(w, hgt, label);
  if (points.length === 0) return svg;
  const lo = Math.min(0, ...points.map((p) => p.v));
  const top = Math.max(...points.map((p) => p.v));
  const hi = top > 0 ? niceMax(top) : 1;
  const t0 = opts.from ?? points[0].t, t1 = opts.to ?? points[points.length - 1].t;
  const span = Math.max(1, t1 - t0);
  const fixed = opts.from !== undefined && opts.to !== undefined;
  const x = (p, i) => (fixed ? left + ((Math.min(t1, Math.max(t0, p.t)) - t0) * (w - left - right)) / span
    : points.length === 1 ? (left + w - right) / 2
      : t1 === t0 ? left + (i * (w - left - right)) / (points.length - 1)
        : left + ((p.t - t0) * (w - left - right)) / span);
  const y = (v) => hgt - pad - ((hgt - pad - 14) * (v - lo)) / (hi - lo || 1);
  const xs = points.map(x);
  for (let i = 1; i < xs.length; i += 1) if (xs[i] - xs[i - 1] < 4) xs[i] = Math.min(w - right, xs[i - 1] + 4);
  // Axes and a light grid line at half height.
  svg.append(s('line', { x1: left, x2: w - right, y1: hgt - pad, y2: hgt - pad, class: 'axis' }));
  svg.append(s('line', { x1: left, x2: left, y1: 8, y2: hgt - pad, class: 'axis' }));
  svg.append(s('line', { x1: left, x2: w - right, y1: y((hi + lo) / 2), y2: y((hi + lo) / 2), class: 'grid' }));
  svg.append(s('text', { x: left - 3, y: y(hi) + 3, class: 'tick end' }, hi));
  svg.append(s('text', { x: left - 3, y: y((hi + lo) / 2) + 3, class: 'tick end' }, (hi + lo) / 2));
  svg.append(s('text', { x: left - 3, y: y(lo) + 3, class: 'tick end' }, lo));
  if (unit) svg.append(s('text', { x: 2, y: 8, class: 'unit' }, unit));
  if (opts.marker !== undefined && opts.marker >= t0 && opts.marker <= t1) {
    const mx = fixed ? x({ t: opts.marker }, 0) : left + ((opts.marker - t0) * (w - left - right)) / span;
    svg.append(s('line', { x1: mx, x2: mx, y1: 8, y2: hgt - pad, class: 'marker' }));
    const end = mx > w - 80;
    if (opts.markerLabel) svg.append(s('text', { x: end ? mx - 3 : mx + 3, y: 14, class: `tick marker-label ${end ? 'end' : 'start'}` }, opts.markerLabel));
  }
  const d = points.map((p, i) => `${i ? 'L' : 'M'}${xs[i].toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
  svg.append(s('path', { d, class: 'line reading' }));
  points.forEach((p, i) => {
    const dot = s('circle', { cx: xs[i], cy: y(p.v), r: points.length > 60 ? 1.6 : 3, class: 'dot reading' });
    dot.append(s('title', {}, `${fmt(p.t)}: ${p.v}${unit ? ` ${unit}` : ''}`));
    svg.append(dot);
  });
  const at = (ms, anchor, xpos) => svg.append(s('text', { x: xpos, y: hgt - pad + 12, class: `tick ${anchor}` }, fmt(ms)));
  at(t0, 'start', left);
  if (t1 > t0) {
    if (fixed) at(t0 + span / 2, '', (left + w - right) / 2);
    at(t1, 'end', w - right);
  }
  svg.append(s('text', { x: (left + w - right) / 2, y: hgt - 3, class: 'tick' }, fmtSpan(span)));
  return svg;
}

function fmtSpan(ms) {
  const m = Math.round(ms / 60000);
  if (m < 1) return `${Math.round(ms / 1000)} s`;
  if (m < 120) return `${m} min`;
  return `${Math.round(m / 60)} h`;
}

/** Horizontal bars: `rows = [{ name, value, cls }]`. */
export function hbars(rows, label) {
  const w = 320, rowH = 22;
  const hgt = Math.max(1, rows.length) * rowH + 4;
  const svg = frame(w, hgt, label);
  svg.setAttribute('preserveAspectRatio', 'xMinYMin meet');
  const max = Math.max(1, ...rows.map((r) => r.value));
  rows.forEach((r, i) => {
    const y = 2 + i * rowH;
    svg.append(s('text', { x: 0, y: y + 15, class: 'tick start' }, r.name));
    svg.append(s('rect', { x: 90, y: y + 3, width: Math.max(2, ((w - 130) * r.value) / max), height: rowH - 8, class: `bar ${r.cls ?? ''}` }));
    svg.append(s('text', { x: 96 + ((w - 130) * r.value) / max, y: y + 15, class: 'tick start' }, r.value));
  });
  return svg;
}

/** A semicircle gauge for `fraction` (0..1) with `text` in the middle. */
export function gauge(fraction, text, label) {
  const f = Math.max(0, Math.min(1, fraction));
  const svg = s('svg', { viewBox: '0 0 120 70', class: 'gauge', role: 'img', 'aria-label': label });
  const arc = 'M10,62 A50,50 0 0 1 110,62';
  const len = Math.PI * 50;
  const level = f < 0.15 ? 'low' : f < 0.35 ? 'mid' : 'ok';
  svg.append(s('path', { d: arc, class: 'track' }));
  svg.append(s('path', { d: arc, class: `fill ${level}`, 'stroke-dasharray': `${(f * len).toFixed(1)} ${len.toFixed(1)}` }));
  svg.append(s('text', { x: 60, y: 58, class: 'gauge-text' }, text));
  return svg;
}
