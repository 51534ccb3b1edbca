// A tiny DOM helper: build elements from plain values. Event handlers are attached with
// addEventListener, never as inline attributes, so the page runs under a CSP without
// 'unsafe-inline'.

/**
 * Creates an element. `props`: `class`, `dataset` (an object; null and undefined entries left out), `on<event>` (a listener), any
 * other key an attribute (`true` for a bare attribute; `false`, `null` and `undefined` leave it
 * out). `children`: nodes, strings, numbers or (nested) arrays of them; null and false are
 * skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'dataset') {
      for (const [name, v] of Object.entries(value)) {
        if (v !== undefined && v !== null) el.dataset[name] = String(v);
      }
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends `children` (as for `h`) to `el`. */
export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A notice: `kind` is `info`, `ok` or `error`; errors are announced at once. */
export function banner(kind, ...children) {
  return h('div', { class: `banner banner-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    ...children);
}

/** A date and time from Unix milliseconds, in the reader's locale. */
export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}
