// Charts drawn as SVG by the console itself: a line over the last samples,
// or bars over days; the figures a reader wants written beside each, and a
// text alternative saying the same.

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** A figure: its title, the drawing, the caption under it. */
function figure(label, image, text) {
  const el = document.createElement('figure');
  el.className = 'chart';
  const title = document.createElement('figcaption');
  title.textContent = label;
  const caption = document.createElement('p');
  caption.className = 'chart-caption';
  caption.textContent = text;
  image.setAttribute('aria-label', `${label}: ${text}`);
  el.append(title, image, caption);
  return el;
}

/** Bars of `values`, one per entry of `labels` (oldest first); each bar
 * names its label and value on hover. */
export function bars(label, unit, labels, values) {
  const top = Math.max(1, ...values);
  const width = 300 / Math.max(1, values.length);
  const image = svg('svg', { viewBox: '0 0 300 80', role: 'img', width: '100%', height: 80 });
  image.append(svg('rect', { class: 'chart-frame', x: 0, y: 0, width: 300, height: 80, rx: 4 }));
  values.forEach((v, i) => {
    const height = (v / top) * 72;
    const bar = svg('rect', { class: 'chart-bar', x: (i * width + 1).toFixed(1), y: (76 - height).toFixed(1),
      width: Math.max(1, width - 2).toFixed(1), height: height.toFixed(1) });
    const hint = svg('title');
    hint.textContent = `${labels[i]}: ${v} ${unit}`;
    bar.append(hint);
    image.append(bar);
  });
  const total = values.reduce((a, b) => a + b, 0);
  const busiest = values.indexOf(Math.max(...values));
  const text = total
    ? `${total} ${unit} from ${labels[0]} to ${labels[labels.length - 1]}, at most ${values[busiest]} on ${labels[busiest]}`
    : `none from ${labels[0]} to ${labels[labels.length - 1]}`;
  return figure(label, image, text);
}

/** A live line chart of at most `capacity` samples; `push(value)` adds one. */
export class LineChart {
  constructor(label, unit, capacity = 90) {
    this.label = label;
    this.unit = unit;
    this.capacity = capacity;
    this.values = [];
    this.line = svg('polyline', { class: 'chart-line', fill: 'none', 'stroke-width': 2 });
    this.image = svg('svg', { viewBox: '0 0 300 80', role: 'img', width: '100%', height: 80 });
    this.image.append(svg('rect', { class: 'chart-frame', x: 0, y: 0, width: 300, height: 80, rx: 4 }), this.line);
    this.figure = figure(label, this.image, '');
    this.caption = this.figure.querySelector('.chart-caption');
    this.draw();
  }

  push(value) {
    this.values.push(value);
    if (this.values.length > this.capacity) this.values.shift();
    this.draw();
  }

  draw() {
    const v = this.values;
    const top = Math.max(1, ...v);
    const step = 300 / Math.max(1, this.capacity - 1);
    const offset = (this.capacity - v.length) * step;
    this.line.setAttribute('points', v.map((y, i) => `${(offset + i * step).toFixed(1)},${(76 - (y / top) * 72).toFixed(1)}`).join(' '));
    const now = v.length ? v[v.length - 1] : 0;
    const text = v.length ? `now ${now} ${this.unit}, at most ${Math.max(...v)} in the last ${v.length} samples` : 'waiting for the first sample';
    this.caption.textContent = text;
    this.image.setAttribute('aria-label', `${this.label}: ${text}`);
  }
}
