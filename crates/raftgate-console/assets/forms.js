// Form pieces shared by the pages: labelled fields that can show the admin API's field errors
// next to themselves. The API names the field at fault by its JSON path (`targets[0].url`,
// `paths[1]`, `service`); every field here carries the path it edits in `data-field`, so an
// error finds its field, or the nearest enclosing one (`paths` for `paths[1]`).

import { h } from './dom.js';

let ids = 0;

/** A fresh element id. */
export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

/**
 * A labelled control editing the JSON field `path`. `item` names one line of a one-per-line
 * textarea (`Path`), so that an error on `paths[1]` reads "Path 2 …".
 */
export function field(path, label, control, { hint, item } = {}) {
  const id = control.id || uid('f');
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  const errorId = `${id}-error`;
  control.setAttribute('aria-describedby', [hintId, errorId].filter(Boolean).join(' '));
  return h('div', { class: 'field', dataset: { field: path, item } },
    h('label', { for: id }, label),
    control,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
    h('p', { class: 'field-error', id: errorId, 'aria-live': 'polite' }));
}

/** A group of controls (checkboxes, rows) editing the JSON field `path`. */
export function group(path, legend, children, { hint, cls } = {}) {
  return h('fieldset', { class: `group ${cls ?? ''}`, dataset: { field: path } },
    h('legend', {}, legend),
    hint ? h('p', { class: 'hint' }, hint) : null,
    children,
    h('p', { class: 'field-error', 'aria-live': 'polite' }));
}

/** A text input. */
export function text(value, props = {}) {
  return h('input', { type: 'text', value: value ?? '', autocomplete: 'off', ...props });
}

/** A number input; read it with `number`. */
export function numeric(value, props = {}) {
  return h('input', { type: 'number', inputmode: 'numeric', value: value ?? '', ...props });
}

/** The number in `input`, or `undefined` when it is empty (the API's default then). */
export function number(input) {
  return input.value.trim() === '' ? undefined : Number(input.value);
}

/** A textarea holding one item per line. */
export function lines(values, props = {}) {
  return h('textarea', { rows: Math.max(2, (values ?? []).length + 1), spellcheck: 'false', ...props },
    (values ?? []).join('\n'));
}

/** The non-empty lines of a textarea, trimmed. */
export function linesOf(textarea) {
  return textarea.value.split('\n').map((l) => l.trim()).filter(Boolean);
}

/** A select of `[value, label]` options with `value` chosen. */
export function select(options, value, props = {}) {
  return h('select', props, options.map(([v, label]) =>
    h('option', { value: v, selected: v === value }, label)));
}

/** Removes every field error of `form`. */
export function clearErrors(form) {
  for (const p of form.querySelectorAll('.field-error')) p.textContent = '';
  for (const c of form.querySelectorAll('[aria-invalid]')) c.removeAttribute('aria-invalid');
}

/**
 * Shows `message` next to the field the JSON path `path` names (or the nearest enclosing one)
 * and focuses it. Returns false when the form has no such field.
 */
export function showError(form, path, message) {
  let at = path;
  let el = null;
  while (at) {
    el = form.querySelector(`[data-field="${CSS.escape(at)}"]`);
    if (el) break;
    const cut = Math.max(at.lastIndexOf('.'), at.lastIndexOf('['));
    if (cut <= 0) break;
    at = at.slice(0, cut);
  }
  if (!el) return false;
  const output = el.querySelector(':scope > .field-error');
  const control = el.querySelector(':scope > input, :scope > select, :scope > textarea')
    ?? el.querySelector('input, select, textarea');
  output.textContent = `${describe(el, path.slice(at.length), control)}${message}`;
  if (control) {
    control.setAttribute('aria-invalid', 'true');
    control.focus();
  }
  return true;
}

/** What part of the field `rest` (the path below it, e.g. `[1]`) names, as a prefix. */
function describe(el, rest, control) {
  if (!rest) return '';
  const index = /^\[(\d+)\]$/.exec(rest);
  if (index && el.dataset.item) {
    const n = Number(index[1]);
    const value = control && control.tagName === 'TEXTAREA' ? linesOf(control)[n] : undefined;
    return `${el.dataset.item} ${n + 1}${value === undefined ? '' : ` (“${value}”)`}: `;
  }
  return `${rest.replace(/^\./, '')}: `;
}
