// Services: where matched requests go. The form edits the targets, the balancing policy,
// retries and timeouts; health checks and policies are kept as they are (the API edits them).

import { h } from './dom.js';
import { resourcePage } from './resource.js';
import { field, group, text, numeric, number, select, uid } from './forms.js';

const BALANCING = [
  ['round_robin', 'Round robin (weighted)'],
  ['least_connections', 'Least connections'],
  ['consistent_hash', 'Consistent hash'],
];

const HASH_ON = [['client_ip', 'Client IP'], ['header', 'A request header'], ['cookie', 'A cookie']];

const page = resourcePage({
  kind: 'services',
  noun: 'service',
  title: 'Services',
  columns: [
    ['Targets', (e) => e.spec.targets.length === 0
      ? h('span', { class: 'muted' }, 'registered instances only')
      : e.spec.targets.map((t) => h('code', { class: 'chip' }, t.url, t.weight === 1 ? '' : ` ×${t.weight}`))],
    ['Balancing', (e) => e.spec.lb.replace(/_/g, ' ')],
  ],
  form,
});

export const title = page.title;
export const render = page.render;

function form(spec) {
  const targets = targetList(spec.targets ?? []);
  const lb = select(BALANCING, spec.lb ?? 'round_robin');
  const hash = hashOn(spec.hash_on);
  const retries = numeric(spec.retries ?? 0, { min: 0, max: 10 });
  const timeouts = spec.timeouts ?? {};
  const connect = numeric(timeouts.connect_ms ?? 5000, { min: 1 });
  const read = numeric(timeouts.read_ms ?? 60000, { min: 1 });
  const total = numeric(timeouts.total_ms ?? 0, { min: 0 });
  const showHash = () => { hash.node.hidden = lb.value !== 'consistent_hash'; };
  lb.addEventListener('change', showHash);
  showHash();
  return {
    nodes: [
      targets.node,
      field('lb', 'Load balancing', lb),
      hash.node,
      field('retries', 'Retries', retries, {
        hint: 'How many times a failed idempotent request is tried on another target (0 to 10).',
      }),
      group('timeouts', 'Upstream timeouts (milliseconds)', h('div', { class: 'row' },
        field('timeouts.connect_ms', 'Connect', connect),
        field('timeouts.read_ms', 'Response head', read),
        field('timeouts.total_ms', 'Whole exchange', total)), {
        hint: 'Connecting to a target; waiting for the response head; the whole exchange, body included (0: no limit).',
      }),
    ],
    read(next) {
      next.targets = targets.read();
      next.lb = lb.value;
      next.hash_on = lb.value === 'consistent_hash' ? hash.read() : null;
      next.retries = number(retries);
      next.timeouts = {
        ...next.timeouts,
        connect_ms: number(connect),
        read_ms: number(read),
        total_ms: number(total),
      };
      return next;
    },
  };
}

/** The editable rows of targets: URL and weight each, added and removed with buttons. */
function targetList(initial) {
  const rows = h('div', { class: 'rows' });
  const add = h('button', { type: 'button', class: 'btn btn-small', onclick: () => addRow({ url: '', weight: 1 }, true) },
    'Add target');
  const node = group('targets', 'Targets', [rows, add], {
    hint: 'Upstream servers, as http://host:port or https://host:port; traffic is shared by weight.',
  });

  function renumber() {
    [...rows.children].forEach((row, i) => {
      row.dataset.field = `targets[${i}]`;
      row.querySelector('[data-role=url]').dataset.field = `targets[${i}].url`;
      row.querySelector('[data-role=weight]').dataset.field = `targets[${i}].weight`;
      row.querySelector('.btn-danger').setAttribute('aria-label', `Remove target ${i + 1}`);
    });
  }

  function addRow(target, focus) {
    const url = text(target.url, { id: uid('target-url'), placeholder: 'http://10.0.0.5:8080', spellcheck: 'false' });
    const weight = numeric(target.weight ?? 1, { id: uid('target-weight'), min: 0 });
    const urlField = field('', 'URL', url);
    urlField.dataset.role = 'url';
    const weightField = field('', 'Weight', weight);
    weightField.dataset.role = 'weight';
    const row = h('div', { class: 'target-row' },
      urlField, weightField,
      h('button', { type: 'button', class: 'btn btn-small btn-danger', onclick: () => { row.remove(); renumber(); } }, 'Remove'),
      h('p', { class: 'field-error', 'aria-live': 'polite' }));
    rows.append(row);
    renumber();
    if (focus) url.focus();
  }

  initial.forEach((t) => addRow(t, false));
  if (initial.length === 0) addRow({ url: '', weight: 1 }, false);
  return {
    node,
    read: () => [...rows.children]
      .map((row) => ({
        url: row.querySelector('[data-role=url] input').value.trim(),
        weight: number(row.querySelector('[data-role=weight] input')),
      }))
      .filter((t) => t.url !== '' || t.weight !== 1),
  };
}

/** What consistent hashing hashes: `"client_ip"`, `{"header": name}` or `{"cookie": name}`. */
function hashOn(value) {
  const kind = typeof value === 'object' && value !== null ? Object.keys(value)[0] : value ?? 'client_ip';
  const which = select(HASH_ON, kind);
  const name = text(typeof value === 'object' && value !== null ? Object.values(value)[0] : '', {
    spellcheck: 'false',
  });
  const nameField = field('hash_on.name', 'Header or cookie name', name);
  const showName = () => {
    nameField.hidden = which.value === 'client_ip';
    nameField.dataset.field = `hash_on.${which.value}`;
  };
  which.addEventListener('change', showName);
  showName();
  const node = group('hash_on', 'Hash on', [field('hash_on.kind', 'What to hash', which), nameField]);
  return {
    node,
    read: () => (which.value === 'client_ip' ? 'client_ip' : { [which.value]: name.value.trim() }),
  };
}
