// The current project's events over the WebSocket: takes made by anyone (other tabs, the API,
// the CLI) arrive as `take.created` without a refresh. Events carry a global `id`; after a
// dropped connection the subscription resumes after the largest id seen, so nothing is missed.
import { socketUser } from './auth.svelte.js';
import { reconnectingSocket } from './socket.js';

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

const socket = reconnectingSocket({
  user: () => feed.user,
  keep: () => feed.user != null,
  onState: (state) => (feed.connection = state),
  onOpen: () => subscribe(),
  onMessage: receive,
});

function subscribe() {
  const message = { type: 'subscribe', project_ids: [feed.project] };
  if (feed.lastId != null) message.last_id = feed.lastId;
  socket.send(message);
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

/**
 * Follow `projectId` (null: nothing). Another project on the same socket is swapped with
 * unsubscribe + subscribe; a change of user (signing in) opens a new socket.
 */
export function follow(projectId) {
  const project = projectId || null;
  const user = project ? socketUser() : null;
  if (project === feed.project && user === feed.user && (socket.active() || !user)) return;
  const previous = feed.project;
  const sameSocket = user === feed.user && socket.connected();
  feed.project = project;
  feed.user = user;
  feed.lastId = null;
  feed.events = 0;
  feed.error = '';
  if (!user) return socket.close(); // no project, or signed in but not yet told as whom
  if (sameSocket) {
    if (previous) socket.send({ type: 'unsubscribe', project_ids: [previous] });
    subscribe();
    return;
  }
  socket.open();
}
