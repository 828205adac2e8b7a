// The queue of this editor's runs: each Run adds tasks (a run count makes variations with other
// seeds); the canvas watches one run at a time (run.svelte.js) and, once it ends, the next
// one this editor queued. The queue panel (QueuePanel.svelte) shows every pending and running
// task of the user, wherever it was started.
import { run, begin, isTerminal } from './run.svelte.js';

const LATER_KEY = 'takeflow.queue.v1';
const SEED_MAX = 2 ** 32 - 1;

export const queue = $state({
  count: 1, // runs per Run click (variations)
  later: loadLater(), // runs queued while another was watched: [{taskId, args}]
  version: 0, // bumped on each submit or move: the panel asks the server again
});

function loadLater() {
  try {
    return JSON.parse(localStorage.getItem(LATER_KEY) || '[]');
  } catch {
    return [];
  }
}
function saveLater() {
  try {
    localStorage.setItem(LATER_KEY, JSON.stringify($state.snapshot(queue.later)));
  } catch {
    /* private mode: only the hand-over after a reload is lost */
  }
}

/** The graphs one Run click submits: `graph` itself, then `count - 1` copies whose literal
 * `seed` inputs (of templates that have one) get fresh random seeds. */
export function variations(graph, count, templates) {
  const n = Math.max(1, Math.min(100, Math.floor(Number(count) || 1)));
  const out = [graph];
  for (let i = 1; i < n; i++) {
    const copy = JSON.parse(JSON.stringify(graph)); // may be a $state proxy: structuredClone refuses those
    for (const node of copy.nodes) {
      const id = node.template.split('@')[0];
      const schema = templates[id]?.inputs_schema?.properties?.seed;
      if (!schema || node.inputs.seed?.kind === 'link') continue;
      const max = Math.min(schema.maximum ?? SEED_MAX, SEED_MAX);
      const min = schema.minimum ?? 0;
      node.inputs.seed = { kind: 'literal', value: min + Math.floor(Math.random() * (max - min + 1)) };
    }
    out.push(copy);
  }
  return out;
}

/** Watch a just-submitted task on the canvas now, or after the run watched now ends. */
export function watch(taskId, ...args) {
  queue.version += 1;
  if (run.taskId && !isTerminal(run.status)) {
    queue.later.push({ taskId, args });
    saveLater();
  } else {
    begin(taskId, ...args);
  }
}

/** The watched run ended: watch the next run this editor queued (if any). */
export function watchNext() {
  if (run.taskId && !isTerminal(run.status)) return;
  const next = queue.later.shift();
  saveLater();
  if (next) begin(next.taskId, ...next.args);
}

$effect.root(() => {
  $effect(() => {
    if (isTerminal(run.status) && queue.later.length) setTimeout(watchNext, 0);
  });
});
