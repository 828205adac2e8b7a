// One reconnecting WebSocket client for `/ws/{user}`, used by the run being watched (run.svelte.js)
// and the project feed (feed.svelte.js). On every open it calls `onOpen(ws)`, where the owner
// (re)subscribes from the position it last saw (a run's `last_seq`, the feed's `last_id`), so a
// dropped connection resumes with no gap. A drop retries after 300 ms, doubling up to 5 s, for as
// long as `keep()` says the owner still wants the connection.
import { withToken } from './auth.svelte.js';

const FIRST_DELAY_MS = 300;
const MAX_DELAY_MS = 5000;

/** The socket URL of `user`, with the access token when there is one. */
export function socketUrl(user) {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  return withToken(`${proto}://${location.host}/ws/${encodeURIComponent(user)}`);
}

/**
 * A connection that reconnects by itself. `user()` names the path's user at each (re)open;
 * `onOpen()` runs once each (re)open succeeds;
 * `onMessage(payload)` gets each parsed JSON message (anything else is ignored); `onState(state)`
 * hears `connecting | connected | reconnecting | idle`.
 */
export function reconnectingSocket({ user, onOpen, onMessage, onState, keep = () => true }) {
  let socket = null;
  let retry = null;
  let backoff = FIRST_DELAY_MS;

  function open(state = 'connecting') {
    clearTimeout(retry);
    retry = null;
    onState(state);
    const ws = new WebSocket(socketUrl(user()));
    socket = ws;
    ws.onopen = () => {
      backoff = FIRST_DELAY_MS;
      onState('connected');
      onOpen();
    };
    ws.onmessage = (msg) => {
      let payload;
      try {
        payload = JSON.parse(msg.data);
      } catch {
        return; // not JSON
      }
      onMessage(payload);
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = null;
      if (!keep()) {
        onState('idle');
        return;
      }
      onState('reconnecting');
      retry = setTimeout(() => (keep() ? open('reconnecting') : onState('idle')), backoff);
      backoff = Math.min(backoff * 2, MAX_DELAY_MS);
    };
  }

  /** Drop the connection (and any pending retry) without reconnecting. */
  function close() {
    clearTimeout(retry);
    retry = null;
    backoff = FIRST_DELAY_MS;
    if (socket) {
      const ws = socket;
      socket = null;
      ws.onclose = null;
      ws.close();
    }
    onState('idle');
  }

  return {
    /** Open a fresh connection, closing the current one. */
    open() {
      close();
      open();
    },
    close,
    /** Whether a connection is open or being (re)established. */
    active: () => socket !== null || retry !== null,
    /** Whether the connection is open now. */
    connected: () => socket?.readyState === WebSocket.OPEN,
    /** Send `message` as JSON when the connection is open; false otherwise. */
    send(message) {
      if (socket?.readyState !== WebSocket.OPEN) return false;
      socket.send(JSON.stringify(message));
      return true;
    },
  };
}
