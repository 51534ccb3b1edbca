// The console's shell: hash routing (`#/page/arg…`), the sign-in guard, sign-out and the
// notices carried from one page to the next. Each page is a module exporting `title` and
// `render(view, args, context)`, which may return a function to call when the page is left.

import { session } from './api.js';
import * as signin from './signin.js';
import * as cluster from './cluster.js';
import * as services from './services.js';
import * as routes from './routes.js';

const pages = { signin, cluster, services, routes };
const HOME = '#/cluster';

const view = document.getElementById('view');
const nav = document.getElementById('nav');
const signOut = document.getElementById('sign-out');
const skip = document.getElementById('skip');

let leave = null;
let wanted = null;
let notice = null;

/** The page and its arguments named by the location's hash. */
function parse(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  try {
    return parts.map(decodeURIComponent);
  } catch {
    return [];
  }
}

/** Shows the page the hash names, after the sign-in guard. */
function show() {
  const [name = '', ...args] = parse(location.hash);
  const page = pages[name];
  const signedIn = session.token() !== null;
  if (!signedIn && page !== signin) {
    if (page) wanted = location.hash;
    location.replace('#/signin');
    return;
  }
  if (!page || (signedIn && page === signin)) {
    location.replace(HOME);
    return;
  }
  if (leave) leave();
  leave = null;
  nav.hidden = !signedIn;
  signOut.hidden = !signedIn;
  for (const link of nav.querySelectorAll('a')) {
    if (link.getAttribute('href') === `#/${name}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${page.title} · raftgate console`;
  view.replaceChildren();
  const context = {
    notice: notice,
    /** Goes on to where the user wanted to be before signing in. */
    signedIn() {
      const next = wanted ?? HOME;
      wanted = null;
      location.hash = next;
    },
    /** Goes to `hash`, showing `message` there. */
    go(hash, message) {
      notice = message;
      if (location.hash === hash) show();
      else location.hash = hash;
    },
    /** Shows the current page again, from fresh data. */
    reload: () => show(),
  };
  notice = null;
  const left = page.render(view, args, context);
  leave = typeof left === 'function' ? left : null;
  const focus = view.querySelector('[data-focus]') ?? view.querySelector('h1');
  if (focus) focus.focus();
}

window.addEventListener('hashchange', show);

// The skip link moves the focus without touching the hash, which names the page.
skip.addEventListener('click', (event) => {
  event.preventDefault();
  view.focus();
});

// A 401 with the kept token: it was revoked, or this node does not know it.
window.addEventListener('raftgate:unauthorized', () => {
  session.signOut();
  notice = 'The node refused your token: it is wrong or was revoked. Sign in again.';
  wanted = location.hash;
  location.hash = '#/signin';
});

signOut.addEventListener('click', () => {
  session.signOut();
  notice = 'Signed out. The token was removed from this tab.';
  wanted = null;
  location.hash = '#/signin';
});

show();
