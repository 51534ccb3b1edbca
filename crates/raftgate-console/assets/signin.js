// Sign-in: paste an admin token. It is checked against the node, then kept in this tab's
// sessionStorage only.

import { h, mount, banner } from './dom.js';
import { api, session } from './api.js';

export const title = 'Sign in';

export function render(view, _args, context) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    'aria-describedby': 'token-hint token-error', dataset: { focus: '' },
  });
  const error = h('p', { id: 'token-error', class: 'field-error', 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Sign in');
  const form = h('form', { class: 'card signin', novalidate: true, onsubmit: submit },
    h('h1', { tabindex: '-1' }, 'Sign in'),
    context.notice ? banner('info', context.notice) : null,
    h('div', { class: 'field', dataset: { field: 'token' } },
      h('label', { for: 'token' }, 'Admin token'),
      input,
      h('p', { class: 'hint', id: 'token-hint' },
        'The bootstrap token (--admin-token) or one made with POST /tokens. It is kept in this ',
        'browser tab only and sent to this node with each request; closing the tab forgets it.'),
      error),
    h('div', { class: 'actions' }, button));
  mount(view, form);

  async function submit(event) {
    event.preventDefault();
    const token = input.value.trim();
    error.textContent = '';
    input.removeAttribute('aria-invalid');
    if (!token) return refuse('Paste an admin token first.');
    button.disabled = true;
    button.textContent = 'Checking…';
    try {
      if (!(await api.accepts(token))) {
        return refuse('This node refused that token: it is not the bootstrap token nor one made with POST /tokens (or it was revoked).');
      }
      session.signIn(token);
      context.signedIn();
    } catch (e) {
      refuse(`Could not check the token: ${e.message}`);
    } finally {
      button.disabled = false;
      button.textContent = 'Sign in';
    }
  }

  function refuse(message) {
    error.textContent = message;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    input.select();
  }
}
