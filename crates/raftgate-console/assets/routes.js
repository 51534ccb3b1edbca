// Routes: which requests go to which service. The form edits the matching (paths, hosts,
// methods, priority), the service and the path rewriting; header changes, policies and
// upgrades are kept as they are (the API edits them).

import { h } from './dom.js';
import { api } from './api.js';
import { resourcePage } from './resource.js';
import { field, group, text, numeric, number, lines, linesOf, select, uid } from './forms.js';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

const page = resourcePage({
  kind: 'routes',
  noun: 'route',
  title: 'Routes',
  columns: [
    ['Paths', (e) => e.spec.paths.length === 0
      ? h('span', { class: 'muted' }, 'every path')
      : e.spec.paths.map((p) => h('code', { class: 'chip' }, p))],
    ['Service', (e) => e.spec.service],
    ['Methods', (e) => (e.spec.methods.length === 0 ? 'any' : e.spec.methods.join(' '))],
  ],
  prepare: async () => (await api.list('services')).map((s) => s.name),
  form,
});

export const title = page.title;
export const render = page.render;

function form(spec, services) {
  const names = [...new Set([...services, ...(spec.service ? [spec.service] : [])])].sort();
  const service = select([['', names.length ? 'Choose a service…' : 'No services yet'],
    ...names.map((n) => [n, n])], spec.service ?? '');
  const paths = lines(spec.paths, { placeholder: '/api\n=/exact/path\n~^/users/[0-9]+$' });
  const hosts = lines(spec.hosts, { placeholder: 'api.example.com\n*.example.com' });
  const methods = methodBoxes(spec.methods ?? []);
  const strip = h('input', { type: 'checkbox', id: uid('strip'), checked: spec.strip_path === true });
  const rewrite = text(spec.rewrite ?? '', { spellcheck: 'false', placeholder: '/v2' });
  const priority = numeric(spec.priority ?? 0);
  return {
    nodes: [
      field('service', 'Service', service, {
        hint: names.length ? null : 'Create a service first: a route sends requests to one.',
      }),
      field('paths', 'Paths', paths, {
        item: 'Path',
        hint: 'One per line: /api is a prefix, =/api/v1 an exact path, ~^/re$ a regular expression. None: every path.',
      }),
      field('hosts', 'Hosts', hosts, {
        item: 'Host',
        hint: 'One per line, matched against the Host header; *.example.com for subdomains. None: every host.',
      }),
      methods.node,
      h('div', { class: 'field field-check', dataset: { field: 'strip_path' } },
        strip, h('label', { for: strip.id }, 'Strip the matched path prefix before forwarding'),
        h('p', { class: 'field-error', 'aria-live': 'polite' })),
      field('rewrite', 'Rewrite the path to', rewrite, {
        hint: 'Replaces the matched prefix (or, for a regular expression, the match: $1 for its first group). Empty: no rewrite.',
      }),
      field('priority', 'Priority', priority, {
        hint: 'Breaks ties between equally specific routes: higher first.',
      }),
    ],
    read(next) {
      next.service = service.value;
      next.paths = linesOf(paths);
      next.hosts = linesOf(hosts);
      next.methods = methods.read();
      next.strip_path = strip.checked;
      next.rewrite = rewrite.value.trim() === '' ? null : rewrite.value.trim();
      next.priority = number(priority);
      return next;
    },
  };
}

/** A checkbox per method (and per other method the route already names); none: any. */
function methodBoxes(chosen) {
  const all = [...METHODS, ...chosen.filter((m) => !METHODS.includes(m))];
  const boxes = all.map((m) => {
    const box = h('input', { type: 'checkbox', id: uid('method'), value: m, checked: chosen.includes(m) });
    return h('span', { class: 'check' }, box, h('label', { for: box.id }, m));
  });
  return {
    node: group('methods', 'Methods', h('div', { class: 'checks' }, boxes), {
      hint: 'None ticked: every method.',
      cls: 'group-inline',
    }),
    read: () => boxes.map((b) => b.querySelector('input')).filter((b) => b.checked).map((b) => b.value),
  };
}
