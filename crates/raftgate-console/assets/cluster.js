// Cluster: every member with its role, whether it leads, its applied index, how far it lags
// and whether it answers, from `GET /cluster/nodes` on the node that served the page. A member
// that is down shows as down; the page refreshes itself while it is open.

import { h, mount, banner } from './dom.js';
import { api } from './api.js';

export const title = 'Cluster';

/** How often the page asks again while open. */
const REFRESH_MS = 5000;

const STATES = {
  ready: ['Ready', 'badge-ok'],
  not_ready: ['Not ready', 'badge-warn'],
  down: ['Down', 'badge-bad'],
};

export function render(view, _args, context) {
  const status = h('p', { class: 'muted', 'aria-live': 'polite' }, 'Loading…');
  const summary = h('div', { class: 'summary' });
  const table = h('div', { class: 'table-wrap' });
  const problem = h('div');
  const refresh = h('button', { type: 'button', class: 'btn', onclick: () => load() }, 'Refresh');
  mount(view,
    h('div', { class: 'page-head' },
      h('h1', { tabindex: '-1' }, 'Cluster'),
      refresh),
    context.notice ? banner('info', context.notice) : null,
    problem, summary, table, status);

  let timer = null;
  let left = false;

  async function load() {
    clearTimeout(timer);
    refresh.disabled = true;
    try {
      const cluster = await api.clusterNodes();
      if (left) return;
      mount(problem);
      show(cluster);
      status.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`;
    } catch (e) {
      if (left) return;
      const why = e.status === 403
        ? 'This token may not see the cluster (a team token): sign in with a cluster token.'
        : `Cannot read the cluster: ${e.message}`;
      mount(problem, banner('error', why));
      status.textContent = '';
    } finally {
      refresh.disabled = false;
      if (!left) timer = setTimeout(load, REFRESH_MS);
    }
  }

  function show(cluster) {
    const down = cluster.nodes.filter((n) => n.state !== 'ready').length;
    mount(summary,
      fact('Leader', cluster.leader_id === null ? 'none known' : `node ${cluster.leader_id}`),
      fact('Term', cluster.term),
      fact('Members', `${cluster.nodes.length}${down ? `, ${down} not ready` : ', all ready'}`),
      fact('Answered by', `node ${cluster.node_id}`));
    const rows = cluster.nodes.map((n) => {
      const [label, tone] = STATES[n.state] ?? [n.state, 'badge-warn'];
      return h('tr', { dataset: { node: n.id, state: n.state } },
        cell('Node', [h('strong', {}, `node ${n.id}`),
          n.leader ? h('span', { class: 'badge badge-accent' }, 'leader') : null]),
        cell('Role', n.role),
        cell('Health', [h('span', { class: `badge ${tone}` }, label),
          n.message ? h('span', { class: 'cell-note' }, n.message) : null]),
        cell('Applied index', n.applied_index ?? '—', 'num'),
        cell('Lag', n.lag ?? '—', 'num'),
        cell('Admin API', address(n.admin_addr)),
        cell('Proxy', address(n.proxy_addr)));
    });
    mount(table, h('table', { class: 'grid' },
      h('caption', { class: 'visually-hidden' }, 'Cluster members'),
      h('thead', {}, h('tr', {},
        ['Node', 'Role', 'Health', 'Applied index', 'Lag', 'Admin API', 'Proxy'].map((t) =>
          h('th', { scope: 'col', class: t === 'Applied index' || t === 'Lag' ? 'num' : null }, t)))),
      h('tbody', {}, rows)));
  }

  load();
  return () => {
    left = true;
    clearTimeout(timer);
  };
}

function fact(label, value) {
  return h('div', { class: 'fact' }, h('span', { class: 'fact-label' }, label),
    h('span', { class: 'fact-value' }, String(value)));
}

/** A table cell; `data-label` names its column where narrow screens stack the cells. */
function cell(label, content, cls = null) {
  return h('td', { dataset: { label }, class: cls }, h('span', { class: 'cell' }, content));
}

/** An address, or "unknown" while the member has not told it. */
function address(addr) {
  return addr ? h('code', {}, addr) : h('span', { class: 'muted' }, 'unknown');
}
