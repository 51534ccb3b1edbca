// The console's only way to the cluster: the public admin API of the node that served the page
// (same origin). The admin token lives in this tab's sessionStorage only; it is sent as
// `Authorization: Bearer`, never in a cookie or a URL, and signing out removes it.

const TOKEN_KEY = 'raftgate.console.token';

/** The signed-in token of this tab. */
export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** An error answer of the admin API: its status and its `{error, message, field}` body. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `the node answered ${status}`);
    this.status = status;
    this.code = body.error;
    this.field = body.field ?? null;
  }
}

/** The version an `ETag` names (`"42"`), for `If-Match`. */
function versionOf(etag) {
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(etag ?? '');
  return m ? Number(m[1]) : undefined;
}

/**
 * One API call. `body` is sent as JSON; `version` as `If-Match` (0: must not exist yet);
 * `token` instead of the signed-in one (to check a token before keeping it). Answers
 * `{data, version}`; throws an ApiError. A 401 with the signed-in token tells the app, which
 * signs out: the token was revoked or the node no longer knows it.
 */
async function call(method, path, { body, version, token } = {}) {
  const headers = { Accept: 'application/json' };
  const bearer = token ?? session.token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (version !== undefined) headers['If-Match'] = `"${version}"`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
    });
  } catch {
    throw new ApiError(0, {
      error: 'unreachable',
      message: 'The node that served this page does not answer. Is it running?',
    });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data && typeof data === 'object'
      ? data
      : { error: `http_${response.status}`, message: text || response.statusText });
    if (response.status === 401 && token === undefined) {
      window.dispatchEvent(new CustomEvent('raftgate:unauthorized'));
    }
    throw error;
  }
  return { data, version: versionOf(response.headers.get('ETag')) };
}

const item = (kind, name) => `/${kind}/${encodeURIComponent(name)}`;

/** The admin API calls the pages make. */
export const api = {
  /** Whether the node accepts `token`: any answer but 401 means it does. */
  async accepts(token) {
    try {
      await call('GET', '/services', { token });
      return true;
    } catch (e) {
      if (e.status === 401) return false;
      if (e.status === 403) return true;
      throw e;
    }
  },
  /** Every member and its health. */
  clusterNodes: async () => (await call('GET', '/cluster/nodes')).data,
  /** Every object of `kind` (`services`, `routes`…) the token may see. */
  list: async (kind) => (await call('GET', `/${kind}`)).data.data,
  /** One object: `{data: entity, version}`. */
  get: (kind, name) => call('GET', item(kind, name)),
  /** Creates (`version` 0) or replaces (`version` as read) an object. */
  put: (kind, name, spec, version) => call('PUT', item(kind, name), { body: spec, version }),
  /** Deletes an object if it is still at `version`. */
  remove: (kind, name, version) => call('DELETE', item(kind, name), { version }),
};
