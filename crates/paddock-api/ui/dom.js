// Small helpers to build the page with DOM calls only: no HTML strings,
// so nothing the API returns is ever parsed as markup.

export const $ = (id) => document.getElementById(id);

// h("button", { class: "danger", onclick: f }, "Delete"): attributes
// (`on…` become listeners, `dataset` fills data-*, booleans set or skip
// the attribute) and children (strings become text).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function button(text, onclick, { kind, action, title } = {}) {
  return h("button", { type: "button", class: kind, onclick, dataset: action ? { action } : undefined, title }, text);
}

export function field(label, input, wide) {
  return h("label", { class: wide ? "wide" : undefined }, label, input);
}

export function table(headings, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

// A line that shows what an action is doing, then its error if any.
export function statusLine() {
  return h("p", { class: "error", role: "alert" });
}

// Runs `work` with `button` disabled and `line` showing progress, then
// the error the API gave, if any. Answers what `work` answered, or
// undefined after an error.
export async function act(button, line, work, doing = "Working…") {
  if (button) button.disabled = true;
  if (line) { line.textContent = doing; line.classList.remove("ok"); }
  try {
    const answer = await work();
    if (line) line.textContent = "";
    return answer;
  } catch (e) {
    if (line) line.textContent = e.message;
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// A titled page: `form(line, redraw)` (if any) above a listing that
// `load(line, redraw)` draws. `load` answers the listing, or
// `{ content, busy }` when something on it is on its way somewhere. It
// is drawn again `every` ms after each drawing (0: only when asked), or
// `busyEvery` ms while busy. Answers a function that stops the polling.
export function listPage(view, title, form, load, { every = 0, busyEvery = every } = {}) {
  const line = statusLine();
  const body = h("div", { class: "listing" });
  let timer = null;
  let stopped = false;
  const redraw = async () => {
    clearTimeout(timer);
    let busy = false;
    try {
      const drawn = await load(line, redraw);
      busy = !(drawn instanceof Node) && drawn.busy;
      body.replaceChildren(drawn instanceof Node ? drawn : drawn.content);
    } catch (e) { line.textContent = e.message; }
    const wait = busy ? busyEvery : every;
    if (!stopped && wait) timer = setTimeout(redraw, wait);
  };
  view.append(h("h2", {}, title), form ? form(line, redraw) : "", line, body);
  redraw();
  return () => { stopped = true; clearTimeout(timer); };
}

export function age(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 90) return `${seconds}s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value < 10 && unit ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

// "A=1\nB=2" -> { A: "1", B: "2" }; a line without "=" is an error
// naming it.
export function parsePairs(text, what) {
  const pairs = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`${what}: "${line}" is not NAME=value`);
    pairs[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  return pairs;
}

export function list(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}
