// Charts drawn as SVG by the console itself: a line over the last samples,
// its newest and largest values written beside it (the figure a reader
// wants), and a text alternative saying the same.

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** A live line chart of at most `capacity` samples; `push(value)` adds one. */
export class LineChart {
  constructor(label, unit, capacity = 90) {
    this.label = label;
    this.unit = unit;
    this.capacity = capacity;
    this.values = [];
    this.line = svg('polyline', { class: 'chart-line', fill: 'none', 'stroke-width': 2 });
    this.area = svg('rect', { class: 'chart-frame', x: 0, y: 0, width: 300, height: 80, rx: 4 });
    this.caption = document.createElement('p');
    this.caption.className = 'chart-caption';
    this.figure = document.createElement('figure');
    this.figure.className = 'chart';
    const title = document.createElement('figcaption');
    title.textContent = label;
    this.image = svg('svg', { viewBox: '0 0 300 80', role: 'img', width: '100%', height: 80 });
    this.image.append(this.area, this.line);
    this.figure.append(title, this.image, this.caption);
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
