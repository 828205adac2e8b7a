// Access tokens for `takeflow serve --auth` (docs/integration.md, "Auth and tokens").
// Without auth the server never answers 401, so no token is ever asked for or sent.

const TOKEN_KEY = 'takeflow.token';

function stored() {
  try {
    return localStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export const auth = $state({
  token: stored(),
  needed: false, // the server answered 401: show the sign-in box
  message: '', // why (the server's 401 message)
  forbidden: '', // the server's last 403 message
  user: null, // the token's user, from GET /api/v1/auth/me (null without auth or before asking)
});

/**
 * The user whose WebSocket path (`/ws/{user}`) to use: the token's user under auth (null until
 * the server has said who that is), else the local name.
 */
export function socketUser() {
  if (auth.token) return auth.user;
  try {
    return localStorage.getItem('takeflow.user') || 'editor';
  } catch {
    return 'editor';
  }
}

/** Remember who the server says we are (`GET /api/v1/auth/me`). */
export function identify(me) {
  auth.user = me?.auth ? (me.user_id ?? null) : null;
}

export function signIn(token) {
  auth.token = token.trim();
  auth.user = null;
  auth.needed = false;
  auth.message = '';
  auth.forbidden = '';
  try {
    localStorage.setItem(TOKEN_KEY, auth.token);
  } catch {
    /* private mode: the token lasts for this page only */
  }
}

export function signOut() {
  auth.token = '';
  auth.user = null;
  auth.forbidden = '';
  try {
    localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* nothing stored */
  }
}

/** The server refused the token (or there was none): forget it and ask for one. */
export function unauthorized(message) {
  if (auth.token) signOut();
  auth.needed = true;
  auth.message = message || 'this server needs an access token';
}

/** Headers for a fetch: the bearer token when there is one. */
export function authHeaders() {
  return auth.token ? { authorization: `Bearer ${auth.token}` } : {};
}

/**
 * A same-origin URL the browser fetches by itself (<img src>, links, the WebSocket), with
 * `token=` in its query when there is a token. Other origins and data:/blob: URLs are left alone.
 */
export function withToken(url) {
  if (!url || !auth.token) return url;
  const text = String(url);
  if (/^(data|blob):/i.test(text)) return text;
  let parsed;
  try {
    parsed = new URL(text, location.href);
  } catch {
    return text;
  }
  const sameOrigin =
    parsed.host === location.host && ['http:', 'https:', 'ws:', 'wss:'].includes(parsed.protocol);
  if (!sameOrigin) return text;
  const [beforeHash, hash] = text.split(/#(.*)/s, 2);
  const sep = beforeHash.includes('?') ? '&' : '?';
  return `${beforeHash}${sep}token=${encodeURIComponent(auth.token)}${hash !== undefined ? `#${hash}` : ''}`;
}
