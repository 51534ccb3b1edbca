// The list and the create/edit form of one kind of replicated object (services, routes…),
// shared by their pages. Every write sends `If-Match` with the version the page read (0 when
// creating: the name must be free), so a change someone else made in between is never
// overwritten: the API answers 412 and the page says so.

import { h, mount, banner, when } from './dom.js';
import { api } from './api.js';
import { field, text, clearErrors, showError } from './forms.js';

/**
 * A page for the kind `cfg.kind`: `#/kind` lists, `#/kind/new` creates, `#/kind/edit/name`
 * edits. `cfg`: `kind` (the API collection), `noun`, `title`, `columns` (`[label, entity =>
 * content]`), `prepare` (async, data the form needs) and `form(spec, prepared)`, which answers
 * `{nodes, read(spec)}`: the fields, and a function writing their values into a copy of the
 * stored spec (so fields the form does not show are kept as they are).
 */
export function resourcePage(cfg) {
  return {
    title: cfg.title,
    render(view, args, context) {
      const [mode, name] = args;
      if (mode === 'new') return editor(view, cfg, null, context);
      if (mode === 'edit' && name) return editor(view, cfg, name, context);
      return list(view, cfg, context);
    },
  };
}

function list(view, cfg, context) {
  const { kind, noun } = cfg;
  const search = h('input', {
    type: 'search', id: `search-${kind}`, autocomplete: 'off',
    placeholder: `Name, ${cfg.columns.map(([label]) => label.toLowerCase()).join(', ')}…`,
    oninput: filter,
  });
  const body = h('tbody');
  const count = h('p', { class: 'muted', 'aria-live': 'polite' }, 'Loading…');
  const problem = h('div');
  const headings = ['Name', ...cfg.columns.map(([label]) => label), 'Version', 'Updated', ''];
  mount(view,
    h('div', { class: 'page-head' },
      h('h1', { tabindex: '-1' }, cfg.title),
      h('a', { class: 'btn btn-primary', href: `#/${kind}/new`, id: `new-${noun}` }, `New ${noun}`)),
    context.notice ? banner('ok', context.notice) : null,
    problem,
    h('div', { class: 'toolbar' },
      h('label', { for: search.id }, `Search ${kind}`),
      search),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'grid', id: `${kind}-table` },
        h('caption', { class: 'visually-hidden' }, cfg.title),
        h('thead', {}, h('tr', {}, headings.map((t) =>
          h('th', { scope: 'col', class: t === 'Version' ? 'num' : null },
            t || h('span', { class: 'visually-hidden' }, 'Actions'))))),
        body)),
    count);

  let items = [];

  function filter() {
    const q = search.value.trim().toLowerCase();
    let shown = 0;
    for (const row of body.rows) {
      const match = row.dataset.search.includes(q);
      row.hidden = !match;
      if (match) shown += 1;
    }
    count.textContent = items.length === 0
      ? `No ${kind} yet.`
      : q ? `${shown} of ${items.length} ${kind} match “${search.value.trim()}”.`
        : `${items.length} ${items.length === 1 ? noun : kind}.`;
  }

  function row(entity) {
    const actions = h('td', { class: 'actions-cell' });
    const cells = cfg.columns.map(([label, show]) => cell(label, show(entity)));
    const tr = h('tr', { dataset: { name: entity.name } },
      cell('Name', h('a', { href: `#/${kind}/edit/${encodeURIComponent(entity.name)}` }, entity.name)),
      cells,
      cell('Version', entity.version, 'num'),
      cell('Updated', when(entity.updated_at)),
      actions);
    tr.dataset.search = tr.textContent.toLowerCase();
    idle();
    return tr;

    function idle() {
      mount(actions,
        h('a', { class: 'btn btn-small', href: `#/${kind}/edit/${encodeURIComponent(entity.name)}`,
          'aria-label': `Edit ${entity.name}` }, 'Edit'),
        h('button', { type: 'button', class: 'btn btn-small btn-danger', onclick: confirm,
          'aria-label': `Delete ${entity.name}` }, 'Delete'));
    }

    function confirm() {
      const yes = h('button', { type: 'button', class: 'btn btn-small btn-danger', onclick: remove },
        'Delete');
      mount(actions,
        h('span', { class: 'confirm' }, `Delete “${entity.name}”?`),
        yes,
        h('button', { type: 'button', class: 'btn btn-small', onclick: () => { idle(); } },
          'Cancel'));
      yes.focus();
    }

    async function remove() {
      try {
        await api.remove(kind, entity.name, entity.version);
        context.go(`#/${kind}`, `Deleted ${noun} “${entity.name}”.`);
      } catch (e) {
        idle();
        mount(problem, e.status === 412
          ? banner('error', `“${entity.name}” was changed by someone else — reload to see its current version. Nothing was deleted.`,
            ' ', reloadButton(context))
          : banner('error', `Cannot delete “${entity.name}”: ${e.message}`));
      }
    }
  }

  (async () => {
    try {
      items = (await api.list(kind)).sort((a, b) => a.name.localeCompare(b.name));
      mount(body, items.map(row));
      filter();
    } catch (e) {
      count.textContent = '';
      mount(problem, banner('error', `Cannot list ${kind}: ${e.message}`));
    }
  })();
}

/** A table cell; `data-label` names its column where narrow screens stack the cells. */
function cell(label, content, cls = null) {
  return h('td', { dataset: { label }, class: cls }, h('span', { class: 'cell' }, content));
}

function reloadButton(context) {
  return h('button', { type: 'button', class: 'btn btn-small', onclick: () => context.reload() },
    'Reload');
}

function editor(view, cfg, name, context) {
  const { kind, noun } = cfg;
  const creating = name === null;
  const problem = h('div');
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  mount(view, h('div', { class: 'column' },
    h('p', { class: 'crumbs' }, h('a', { href: `#/${kind}` }, cfg.title)),
    h('h1', { tabindex: '-1' }, creating ? `New ${noun}` : `Edit ${noun} “${name}”`),
    problem,
    body));

  let left = false;
  (async () => {
    let stored = {};
    let version = 0;
    let prepared;
    try {
      [prepared] = await Promise.all([
        cfg.prepare ? cfg.prepare() : null,
        creating ? null : api.get(kind, name).then((answer) => {
          stored = answer.data.spec;
          version = answer.version ?? answer.data.version;
        }),
      ]);
    } catch (e) {
      if (left) return;
      mount(body);
      mount(problem, banner('error', e.status === 404
        ? `There is no ${noun} “${name}”: someone may have deleted it.`
        : `Cannot load the ${noun}: ${e.message}`));
      return;
    }
    if (left) return;
    const nameInput = text(name, { readonly: !creating, spellcheck: 'false' });
    const { nodes, read } = cfg.form(stored, prepared);
    const save = h('button', { type: 'submit', class: 'btn btn-primary' },
      creating ? `Create ${noun}` : 'Save changes');
    const form = h('form', { class: 'card form', novalidate: true, onsubmit: submit },
      field('name', 'Name', nameInput, {
        hint: creating
          ? '1 to 128 of A–Z a–z 0–9 - _ . ~; it cannot be changed later.'
          : `Version ${version}. Changes are saved only if nobody changed it since this page read it.`,
      }),
      nodes,
      h('div', { class: 'actions' }, save, h('a', { class: 'btn', href: `#/${kind}` }, 'Cancel')));
    mount(body, form);
    if (creating) nameInput.focus();

    async function submit(event) {
      event.preventDefault();
      clearErrors(form);
      mount(problem);
      const target = creating ? nameInput.value.trim() : name;
      if (!target) {
        showError(form, 'name', `Give the ${noun} a name.`);
        return;
      }
      const spec = read(structuredClone(stored));
      save.disabled = true;
      try {
        const answer = await api.put(kind, target, spec, creating ? 0 : version);
        context.go(`#/${kind}`, `Saved ${noun} “${target}” (version ${answer.version}).`);
      } catch (e) {
        if (e.status === 412) {
          mount(problem, banner('error', creating
            ? `A ${noun} named “${target}” already exists — pick another name, or reload the list.`
            : `This ${noun} was changed by someone else — reload to edit its current version. Your changes were not saved.`,
          ' ', reloadButton(context)));
          problem.querySelector('button').focus();
        } else if (!(e.field && showError(form, e.field, e.message))) {
          mount(problem, banner('error', e.field ? `${e.field}: ${e.message}` : e.message));
        }
      } finally {
        save.disabled = false;
      }
    }
  })();
  return () => {
    left = true;
  };
}
