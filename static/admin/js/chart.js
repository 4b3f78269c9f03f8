// Tiny SVG charts (stacked bars per day, lines) with a screen-reader data table each.

import { h, nextId, fmtNum } from './ui.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 640;
const H = 220;
const PAD = { l: 54, r: 8, t: 10, b: 26 };

function s(tag, attrs, kids) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, String(v));
  for (const kid of [].concat(kids || [])) el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

// The frame: title, y gridlines with labels, first/last x labels.
function frame(title, labels, max, fmt) {
  const titleId = nextId('chart');
  const svg = s('svg', {
    class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': titleId,
    width: W, height: H, focusable: 'false',
  }, s('title', { id: titleId }, title));
  const plotH = H - PAD.t - PAD.b;
  for (const f of [0, 0.5, 1]) {
    const y = PAD.t + plotH * (1 - f);
    svg.append(
      s('line', { class: 'grid', x1: PAD.l, x2: W - PAD.r, y1: y, y2: y }),
      s('text', { class: 'axis', x: PAD.l - 6, y: y + 4, 'text-anchor': 'end' }, fmt(max * f)),
    );
  }
  if (labels.length) {
    svg.append(s('text', { class: 'axis', x: PAD.l, y: H - 6 }, labels[0]));
    if (labels.length > 1) svg.append(s('text', { class: 'axis', x: W - PAD.r, y: H - 6, 'text-anchor': 'end' }, labels[labels.length - 1]));
  }
  return svg;
}

function legend(series) {
  return h('ul', { class: 'legend' }, series.map((x, i) =>
    h('li', {}, [h('span', { class: `swatch c${x.color ?? i}`, 'aria-hidden': 'true' }), x.name])));
}

function dataTable(title, labels, series, fmt) {
  return h('div', { class: 'sr-only' }, h('table', {}, [
    h('caption', {}, `${title}: data`),
    h('thead', {}, h('tr', {}, [h('th', { scope: 'col' }, 'Day'), series.map((x) => h('th', { scope: 'col' }, x.name))])),
    h('tbody', {}, labels.map((l, i) => h('tr', {}, [h('th', { scope: 'row' }, l), series.map((x) => h('td', {}, fmt(x.values[i])))]))),
  ]));
}

function figure(title, svg, labels, series, fmt, summary) {
  return h('figure', { class: 'chart-box' }, [
    h('figcaption', {}, title),
    svg,
    legend(series),
    summary ? h('p', { class: 'sr-only' }, summary) : null,
    dataTable(title, labels, series, fmt),
  ]);
}

// Bars per day, the series stacked on each other.
export function stackedBars(title, labels, series, summary) {
  const totals = labels.map((_, i) => series.reduce((a, x) => a + (x.values[i] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const svg = frame(title, labels, max, fmtNum);
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  const step = plotW / Math.max(1, labels.length);
  const bw = Math.max(1, step * 0.7);
  labels.forEach((label, i) => {
    let y = PAD.t + plotH;
    series.forEach((x, k) => {
      const v = x.values[i] || 0;
      if (!v) return;
      const bh = (v / max) * plotH;
      y -= bh;
      svg.append(s('rect', { class: `c${x.color ?? k}`, x: PAD.l + i * step + (step - bw) / 2, y, width: bw, height: bh },
        s('title', {}, `${label} · ${x.name}: ${fmtNum(v)}`)));
    });
  });
  return figure(title, svg, labels, series, fmtNum, summary);
}

// Lines; a null value breaks its line.
export function lines(title, labels, series, fmt = fmtNum, summary) {
  const all = series.flatMap((x) => x.values.filter((v) => v != null));
  const max = niceMax(Math.max(0, ...all));
  const svg = frame(title, labels, max, fmt);
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  const x = (i) => PAD.l + (labels.length > 1 ? (i * plotW) / (labels.length - 1) : plotW / 2);
  const y = (v) => PAD.t + plotH * (1 - v / max);
  series.forEach((ser, k) => {
    let run = [];
    const flush = () => {
      if (run.length > 1) svg.append(s('polyline', { class: `line c${ser.color ?? k}`, points: run.join(' ') }));
      run = [];
    };
    ser.values.forEach((v, i) => {
      if (v == null) { flush(); return; }
      run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      svg.append(s('circle', { class: `dot c${ser.color ?? k}`, cx: x(i), cy: y(v), r: 2.5 },
        s('title', {}, `${labels[i]} · ${ser.name}: ${fmt(v)}`)));
    });
    flush();
  });
  return figure(title, svg, labels, series, fmt, summary);
}
