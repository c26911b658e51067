// DOM helpers. Data only ever reaches the page as text nodes or attribute values, never as
// markup, so an event field cannot inject script; and with its bidi controls (marks,
// embeddings, overrides, isolates) shown as U+FFFD, so it cannot turn text around ("\u202e24_suc" read as "cus_42").

const BIDI_CONTROLS = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;

function shown(value) {
  return String(value).replace(BIDI_CONTROLS, "\uFFFD");
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else {
      node.setAttribute(name, value === true ? "" : shown(value));
    }
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(shown(child)));
  }
}

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  append(node, children);
  return node;
}

export function time(iso) {
  if (!iso) return "—";
  const when = new Date(iso);
  return h("time", { datetime: iso, title: iso }, when.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  }));
}

export function badge(kind, value) {
  return h("span", { class: `badge ${kind}-${value}` }, value);
}

export function number(value, digits = 0) {
  return Number(value || 0).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function errorBox(error) {
  const where = error && error.details && error.details.where ? ` (${JSON.stringify(error.details.where)})` : "";
  return h("p", { class: "error", role: "alert" }, `${error.message || error}${where}`);
}

export function field(label, control) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

export function select(name, options, value = "") {
  return h("select", { name, id: `f-${name}` },
    options.map(([optionValue, text]) => h("option", { value: optionValue, selected: optionValue === value }, text)));
}

export function table(caption, columns, rows, empty = "Nothing to show.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows)));
}

export function section(title, ...children) {
  return h("section", { "aria-label": title }, h("h2", {}, title), ...children);
}

// Flattens an event's data ({"geo": {"country": "FR"}}) into [["geo.country", "FR"], ...].
export function flatten(value, prefix = "") {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return [[prefix, Array.isArray(value) ? value.join(", ") : value]];
  }
  return Object.entries(value).flatMap(([k, v]) => flatten(v, prefix ? `${prefix}.${k}` : k));
}

export function featureValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return Number.isInteger(value) ? number(value) : number(value, 3);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// A line chart of several series over the same times, as SVG with an accessible label
// and a legend that also shows each series' latest value.
export function lineChart(title, times, series, unit = "") {
  const width = 560, height = 160, pad = { left: 48, right: 8, top: 8, bottom: 20 };
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const n = Math.max(times.length, 2);
  const x = (i) => pad.left + (i * (width - pad.left - pad.right)) / (n - 1);
  const y = (v) => height - pad.bottom - (v / max) * (height - pad.top - pad.bottom);
  const latest = series.map((s) => `${s.name} ${number(s.values.at(-1) || 0, unit === "/s" ? 1 : 0)}${unit}`).join(", ");
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title}: ${latest}`, class: "chart" },
    svg("line", { x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0), class: "axis" }),
    svg("line", { x1: pad.left, y1: y(max), x2: width - pad.right, y2: y(max), class: "grid" }),
    svg("text", { x: pad.left - 6, y: y(max) + 4, class: "tick", "text-anchor": "end" }, number(max, max < 10 ? 1 : 0)),
    svg("text", { x: pad.left - 6, y: y(0) + 4, class: "tick", "text-anchor": "end" }, "0"),
    times.length ? svg("text", { x: width - pad.right, y: height - 4, class: "tick", "text-anchor": "end" },
      new Date(times.at(-1)).toLocaleTimeString()) : null,
    series.map((s, k) => s.values.length > 1
      ? svg("polyline", { class: `line s${k}`, points: s.values.map((v, i) => `${x(i)},${y(v)}`).join(" ") })
      : null));
  return h("figure", { class: "chart-box" },
    h("figcaption", {}, title),
    chart,
    h("ul", { class: "legend" }, series.map((s, k) =>
      h("li", { class: `s${k}` }, h("span", { class: "swatch", "aria-hidden": "true" }), `${s.name}: `,
        h("strong", {}, `${number(s.values.at(-1) || 0, unit === "/s" ? 1 : 0)}${unit}`)))));
}

// Horizontal bars, one per [label, value], with the value written beside each bar; the
// labels and values are also the accessible description.
export function barChart(title, bars) {
  const width = 560, row = 22, labelWidth = 110, height = Math.max(1, bars.length) * row + 4;
  const max = Math.max(1, ...bars.map(([, v]) => v));
  const scale = (v) => (v / max) * (width - labelWidth - 70);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart bars",
    "aria-label": `${title}: ${bars.map(([l, v]) => `${l} ${v}`).join(", ")}` },
    bars.map(([label, value], i) => [
      svg("text", { x: labelWidth - 8, y: i * row + 16, class: "tick", "text-anchor": "end" }, label),
      svg("rect", { x: labelWidth, y: i * row + 4, width: Math.max(1, scale(value)), height: row - 8, class: "bar" }),
      svg("text", { x: labelWidth + scale(value) + 6, y: i * row + 16, class: "tick" }, number(value)),
    ]));
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), chart);
}

export function announce(text) {
  const region = document.getElementById("status") || document.body.appendChild(
    h("p", { id: "status", role: "status", "aria-live": "polite", class: "status" }));
  region.textContent = text;
}
