// The current project's events over the WebSocket: takes made by anyone (other tabs, the API,
// the CLI) arrive as `take.created` without a refresh. Events carry a global `id`; after a
// dropped connection the subscription resumes after the largest id seen, so nothing is missed.
import { withToken, socketUser } from './auth.svelte.js';

export const feed = $state({
  project: null, // the project followed
  user: null, // the WebSocket path's user
  connection: 'idle', // idle | connecting | connected | reconnecting
  lastId: null, // the largest event id seen for `project` (null: none yet, start from now)
  events: 0, // events of `project` received
  error: '', // the server's last refusal of a subscription
});

const listeners = new Set();

/** Call `fn(event)` for each event of the followed project, and `fn({type: 'subscribed'})`. */
export function onProjectEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

let socket = null;
let retry = null;
let backoff = 300;

function wsUrl(user) {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  return withToken(`${proto}://${location.host}/ws/${encodeURIComponent(user)}`);
}

function subscribe(ws) {
  const message = { type: 'subscribe', project_ids: [feed.project] };
  if (feed.lastId != null) message.last_id = feed.lastId;
  ws.send(JSON.stringify(message));
}

function tell(evt) {
  for (const fn of listeners) {
    try {
      fn(evt);
    } catch (err) {
      console.error('project event listener failed', err);
    }
  }
}

function receive(payload) {
  const items = Array.isArray(payload) ? payload : [payload];
  for (const msg of items) {
    if (!msg || typeof msg.type !== 'string') continue;
    if (msg.type === 'subscribed') {
      if (!(msg.project_ids ?? []).includes(feed.project)) continue;
      // Nothing seen yet: the server's position is where a reconnect picks up.
      if (feed.lastId == null && typeof msg.last_id === 'number') feed.lastId = msg.last_id;
      feed.error = '';
      tell(msg);
    } else if (msg.type === 'error') {
      feed.error = msg.message ?? msg.code ?? 'refused';
    } else if (typeof msg.id === 'number' && msg.project_id === feed.project && msg.data) {
      if (feed.lastId == null || msg.id > feed.lastId) feed.lastId = msg.id;
      feed.events += 1;
      tell(msg);
    }
  }
}

function open() {
  clearTimeout(retry);
  retry = null;
  feed.connection = socket ? 'reconnecting' : 'connecting';
  const ws = new WebSocket(wsUrl(feed.user));
  socket = ws;
  ws.onopen = () => {
    backoff = 300;
    feed.connection = 'connected';
    subscribe(ws);
  };
  ws.onmessage = (msg) => {
    try {
      receive(JSON.parse(msg.data));
    } catch {
      /* not JSON: ignore */
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    feed.connection = 'reconnecting';
    retry = setTimeout(open, backoff);
    backoff = Math.min(backoff * 2, 5000);
  };
}

function close() {
  clearTimeout(retry);
  retry = null;
  if (socket) {
    const ws = socket;
    socket = null;
    ws.onclose = null;
    ws.close();
  }
  feed.connection = 'idle';
}

/**
 * Follow `projectId` (null: nothing). Another project on the same socket is swapped with
 * unsubscribe + subscribe; a change of user (signing in) opens a new socket.
 */
export function follow(projectId) {
  const project = projectId || null;
  const user = project ? socketUser() : null;
  if (project === feed.project && user === feed.user && (socket || !user)) return;
  const previous = feed.project;
  const sameSocket = socket && user === feed.user && socket.readyState === WebSocket.OPEN;
  feed.project = project;
  feed.user = user;
  feed.lastId = null;
  feed.events = 0;
  feed.error = '';
  if (!user) return close(); // no project, or signed in but not yet told as whom
  if (sameSocket) {
    if (previous) socket.send(JSON.stringify({ type: 'unsubscribe', project_ids: [previous] }));
    subscribe(socket);
    return;
  }
  close();
  open();
}
