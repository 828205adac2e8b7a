// The run being watched: per-node state folded from task events, persisted so a reload
// resumes from the last sequence number it saw (the server replays the rest, no gap, no duplicate).
import { reconnectingSocket } from './socket.js';

const STORAGE_KEY = 'takeflow.run.v1';
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

function blank() {
  return {
    taskId: null,
    projectId: null,
    shot: null,
    doc: null, // the editor canvas that ran it (ui.doc): its node states belong to that canvas only
    user: null, // the task's owner: the WebSocket path /ws/{user} (a token's user under auth)
    status: 'idle', // idle | submitting | queued | running | completed | failed | cancelled
    progress: 0,
    lastSeq: 0,
    applied: 0,
    gaps: 0,
    message: '',
    code: '',
    failedNode: null,
    nodes: {}, // id -> {state, progress, stage, message, eta, preview, previews, error, outputs, image}
    terminal: [],
    outputsOf: {}, // node id -> output port names
    outputs: {},
    take: null,
    commit: null,
    startedAt: null,
    finishedAt: null,
  };
}

export const run = $state(blank());
export const live = $state({ connection: 'idle', takesVersion: 0 });

export function isTerminal(status) {
  return TERMINAL.has(status);
}

function persist() {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify($state.snapshot(run)));
  } catch {
    /* private mode or quota: the run still works, only reload recovery is lost */
  }
}

/** Start watching a freshly submitted task of `user`; `graphNodes` are the graph's nodes, of canvas `doc`. */
export function begin(taskId, projectId, shot, graphNodes, outputsOf, user = null, doc = null) {
  Object.assign(run, blank());
  const sources = new Set();
  for (const n of graphNodes) {
    for (const input of Object.values(n.inputs)) if (input.kind === 'link') sources.add(input.node);
  }
  run.taskId = taskId;
  run.projectId = projectId;
  run.shot = shot;
  run.user = user;
  run.doc = doc;
  run.status = 'queued';
  run.startedAt = Date.now();
  run.outputsOf = outputsOf;
  run.terminal = graphNodes.map((n) => n.id).filter((id) => !sources.has(id));
  for (const n of graphNodes) run.nodes[n.id] = { state: 'queued', progress: 0 };
  persist();
  connect();
}

export function reset() {
  disconnect();
  Object.assign(run, blank());
  persist();
}

function node(id) {
  if (!id) return null;
  run.nodes[id] ??= { state: 'queued', progress: 0 };
  return run.nodes[id];
}

/** Fold one server event into the run state. Returns false for events of other tasks or replays. */
export function applyEvent(evt) {
  const data = evt.data ?? {};
  if (data.task_id !== run.taskId) return false;
  if (typeof evt.seq === 'number') {
    if (evt.seq <= run.lastSeq) return false;
    if (evt.seq !== run.lastSeq + 1) run.gaps += 1;
    run.lastSeq = evt.seq;
  }
  run.applied += 1;
  const n = node(data.node_id);
  switch (evt.type) {
    case 'task.submitted':
      if (!isTerminal(run.status)) run.status = 'queued';
      break;
    case 'task.started':
      run.status = 'running';
      break;
    case 'task.progress':
      run.status = 'running';
      run.progress = data.progress ?? run.progress;
      if (n) {
        n.state = 'running';
        n.progress = data.node_progress ?? n.progress;
        n.stage = data.stage ?? '';
        n.message = data.message ?? '';
        n.eta = data.eta ?? null;
        if (data.preview_url) {
          n.preview = data.preview_url; // the latest one; the finished image replaces it
          n.previews = (n.previews ?? 0) + 1;
        }
      }
      break;
    case 'node.state':
      if (n) {
        n.state = data.state;
        if (data.state === 'running') run.status = 'running';
        if (data.state === 'completed') {
          n.progress = 1;
          n.eta = null;
        }
        if (data.outputs) n.outputs = data.outputs;
        if (data.error) n.error = typeof data.error === 'string' ? data.error : data.error.message;
        if (data.duration_ms != null) n.duration = data.duration_ms;
      }
      break;
    case 'take.created':
      run.take = data.take ?? run.take;
      live.takesVersion += 1;
      break;
    case 'task.completed':
      run.status = 'completed';
      run.progress = 1;
      run.outputs = data.outputs ?? {};
      run.take = data.take ?? run.take;
      run.commit = data.commit ?? null;
      run.finishedAt = Date.now();
      attachImages();
      for (const s of Object.values(run.nodes)) if (s.state !== 'failed') Object.assign(s, { state: 'completed', progress: 1, eta: null });
      live.takesVersion += 1;
      break;
    case 'task.failed':
      run.status = 'failed';
      run.code = data.code ?? '';
      run.message = data.message ?? 'the task failed';
      run.failedNode = data.node_id ?? null;
      run.finishedAt = Date.now();
      if (n) Object.assign(n, { state: 'failed', error: data.message ?? n.error, eta: null });
      for (const s of Object.values(run.nodes)) if (s.state === 'queued' || s.state === 'running') s.state = 'skipped';
      break;
    case 'task.cancelled':
      run.status = 'cancelled';
      run.message = data.message ?? 'cancelled';
      run.finishedAt = Date.now();
      for (const s of Object.values(run.nodes)) if (s.state === 'queued' || s.state === 'running') s.state = 'cancelled';
      break;
    default:
      break;
  }
  persist();
  if (isTerminal(run.status)) disconnect();
  return true;
}

/** Put each terminal node's first image (or video) output (keyed `port` or `node.port` in the take) on the node. */
function attachImages() {
  for (const id of run.terminal) {
    for (const port of run.outputsOf[id] ?? []) {
      const out = run.outputs[`${id}.${port}`] ?? run.outputs[port];
      const kind = String(out?.content_type ?? '').split('/')[0];
      if (kind === 'image' || kind === 'video') {
        node(id)[kind] = out.url ?? `/api/v1/projects/${encodeURIComponent(run.projectId)}/files/${out.path}`;
        break;
      }
    }
  }
}

// --- WebSocket -----------------------------------------------------------------------------

const socket = reconnectingSocket({
  user: () => run.user || localStorage.getItem('takeflow.user') || 'editor',
  keep: () => Boolean(run.taskId) && !isTerminal(run.status),
  onState: (state) => (live.connection = state),
  onOpen: () =>
    socket.send({ type: 'subscribe', task_ids: [run.taskId], last_seq: { [run.taskId]: run.lastSeq } }),
  onMessage: (payload) => {
    const events = Array.isArray(payload) ? payload : Array.isArray(payload.events) ? payload.events : [payload];
    for (const evt of events) if (evt && typeof evt.type === 'string' && evt.data) applyEvent(evt);
  },
});

/** Watch the run's task over the socket, from its last sequence number (nothing when it is over). */
export function connect() {
  if (!run.taskId || isTerminal(run.status)) return;
  socket.open();
}

export function disconnect() {
  socket.close();
}

/** After a page load: bring back the last run and catch up from its last sequence number. */
export function restore() {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || 'null');
  } catch {
    saved = null;
  }
  if (!saved?.taskId) return false;
  Object.assign(run, blank(), saved);
  connect();
  return true;
}
