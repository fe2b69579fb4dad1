// Functions paddock evaluates in a browser session's page. Each call is
// `(() => { <this file>; return <function>(<arguments as JSON>); })()`, so
// nothing is left behind in the page's globals.

// A CSS selector that finds `el` again: its id when it is unique, else
// its path of tags and :nth-of-type positions from the nearest element
// with an id (or the document's root).
function selectorOf(el) {
  if (!(el instanceof Element)) return null;
  const parts = [];
  for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
    if (node.id && document.querySelectorAll('#' + CSS.escape(node.id)).length === 1) {
      parts.unshift('#' + CSS.escape(node.id));
      break;
    }
    let part = node.localName;
    const parent = node.parentElement;
    if (parent) {
      const same = Array.from(parent.children).filter((c) => c.localName === node.localName);
      if (same.length > 1) part += ':nth-of-type(' + (same.indexOf(node) + 1) + ')';
    }
    parts.unshift(part);
  }
  return parts.join(' > ');
}

function textOf(el, limit) {
  const text = (el.innerText !== undefined ? el.innerText : el.textContent) || '';
  const clean = text.replace(/\s+/g, ' ').trim();
  return clean.length > limit ? clean.slice(0, limit) : clean;
}

function isVisible(el) {
  const rect = el.getBoundingClientRect();
  const style = getComputedStyle(el);
  return rect.width > 0 && rect.height > 0 && style.visibility !== 'hidden' && style.display !== 'none';
}

// The first element matching `selector`: {el} (null when none), or
// {error} when the browser cannot parse the selector.
function query(selector) {
  try {
    return { el: document.querySelector(selector) };
  } catch (e) {
    return { error: String(e.message || e) };
  }
}

// Where the element is: {found, visible, x, y} with (x, y) its centre in
// the viewport, after scrolling it into view. A selector the browser
// cannot parse is {error}.
function locate(args) {
  const { el, error } = query(args.selector);
  if (error) return { error };
  if (!el) return { found: false };
  el.scrollIntoView({ block: 'center', inline: 'center', behavior: 'instant' });
  const rect = el.getBoundingClientRect();
  return {
    found: true,
    visible: isVisible(el),
    x: rect.left + rect.width / 2,
    y: rect.top + rect.height / 2,
  };
}

function clickElement(args) {
  const el = document.querySelector(args.selector);
  if (!el) return { found: false };
  el.click();
  return { found: true };
}

function focusElement(args) {
  const el = document.querySelector(args.selector);
  if (!el) return { found: false };
  el.focus();
  return { found: true, focused: document.activeElement === el };
}

// Sets a form field's value as a user's input would (the native setter,
// so frameworks that track values see it; then input and change events).
function fillElement(args) {
  const el = document.querySelector(args.selector);
  if (!el) return { found: false };
  el.focus();
  const proto = el instanceof HTMLInputElement ? HTMLInputElement.prototype
    : el instanceof HTMLTextAreaElement ? HTMLTextAreaElement.prototype
    : el instanceof HTMLSelectElement ? HTMLSelectElement.prototype : null;
  if (proto) {
    Object.getOwnPropertyDescriptor(proto, 'value').set.call(el, args.value);
  } else if (el.isContentEditable) {
    el.textContent = args.value;
  } else {
    return { found: true, fillable: false, tag: el.localName };
  }
  el.dispatchEvent(new Event('input', { bubbles: true }));
  el.dispatchEvent(new Event('change', { bubbles: true }));
  return { found: true, fillable: true };
}

function scrollPage(args) {
  if (args.selector) {
    const { el, error } = query(args.selector);
    if (error) return { error };
    if (!el) return { found: false };
    el.scrollIntoView({ block: 'center', behavior: 'instant' });
  } else {
    window.scrollTo({
      left: args.x === null ? window.scrollX : args.x,
      top: args.y === null ? window.scrollY : args.y,
      behavior: 'instant',
    });
  }
  return { found: true, scroll_x: window.scrollX, scroll_y: window.scrollY };
}

function elementState(args) {
  const { el, error } = query(args.selector);
  if (error) return { error };
  return { found: !!el, visible: !!el && isVisible(el), ready_state: document.readyState };
}

function extractElements(args) {
  let list;
  try {
    list = Array.from(document.querySelectorAll(args.selector));
  } catch (e) {
    return { error: String(e.message || e) };
  }
  const total = list.length;
  return {
    total,
    elements: list.slice(0, args.limit).map((el) => {
      const attributes = {};
      if (args.attributes && args.attributes.length) {
        for (const name of args.attributes) {
          const value = el.getAttribute(name);
          if (value !== null) attributes[name] = value;
        }
      } else {
        for (const attr of Array.from(el.attributes)) attributes[attr.name] = attr.value;
      }
      return {
        tag: el.localName,
        text: textOf(el, 1000),
        selector: selectorOf(el),
        attributes,
        visible: isVisible(el),
      };
    }),
  };
}

const INTERACTIVE = 'a[href], button, input, select, textarea, summary, [role="button"], [role="link"], [role="checkbox"], [role="tab"], [onclick], [contenteditable="true"]';
const DROPPED = 'script, style, noscript, template, svg, canvas, iframe, nav, footer, aside, header[role="banner"], [aria-hidden="true"]';
const BLOCKS = 'h1, h2, h3, h4, h5, h6, p, li, td, th, blockquote, pre, figcaption, dd, dt, label, button, a[href]';

// What an agent reads of a page: its main text without scripts, styles
// and navigation; the elements it can act on; text blocks with the
// selectors that find them.
function pageContent(args) {
  const root = document.querySelector('article') || document.querySelector('main') || document.body;
  let content = '';
  if (root) {
    const copy = root.cloneNode(true);
    copy.querySelectorAll(DROPPED).forEach((n) => n.remove());
    // innerText needs layout; a detached copy has none, so the copy is
    // read through its text with block elements as line breaks.
    copy.querySelectorAll('br, p, div, li, h1, h2, h3, h4, h5, h6, tr, pre, blockquote').forEach((n) => {
      n.insertAdjacentText('afterend', '\n');
    });
    content = (copy.textContent || '')
      .split('\n')
      .map((line) => line.replace(/\s+/g, ' ').trim())
      .filter((line) => line.length > 0)
      .join('\n');
  }
  const result = {
    url: location.href,
    title: document.title,
    readable_content: {
      title: document.title,
      url: location.href,
      content,
      length: content.length,
    },
  };
  if (args.include_interactive) {
    result.interactive_elements = Array.from(document.querySelectorAll(INTERACTIVE))
      .filter(isVisible)
      .slice(0, 500)
      .map((el) => ({
        selector: selectorOf(el),
        tag: el.localName,
        type: el.getAttribute('type') || null,
        role: el.getAttribute('role') || null,
        text: textOf(el, 200),
        name: el.getAttribute('name') || null,
        placeholder: el.getAttribute('placeholder') || null,
        href: el.getAttribute('href') || null,
        value: 'value' in el && el.localName !== 'button' ? String(el.value) : null,
      }));
  }
  if (args.include_anchors) {
    const anchors = [];
    for (const el of document.querySelectorAll(BLOCKS)) {
      if (anchors.length >= args.max_anchors) break;
      if (!isVisible(el)) continue;
      const text = textOf(el, 300);
      if (text.length < 3) continue;
      anchors.push({ text, selector: selectorOf(el), tag: el.localName });
    }
    result.content_anchors = anchors;
  }
  return result;
}

function pageInfo() {
  return {
    url: location.href,
    title: document.title,
    ready_state: document.readyState,
    width: Math.max(document.documentElement.scrollWidth, document.body ? document.body.scrollWidth : 0),
    height: Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0),
  };
}
