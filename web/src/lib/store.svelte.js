// Editor-wide state shared by the app and its node components.

export const catalog = $state({ templates: {}, list: [], loaded: false, error: '' });

export const ui = $state({
  project: null,
  shot: 'ch01/sc01/sh010',
  canvasName: 'untitled',
  doc: newDocId(), // this canvas in this editor: a run's node states show only on the canvas that ran
  errors: {}, // node id -> [{code, message, port}] from the server's 422
  graphErrors: [], // errors not tied to a node
  linked: {}, // node id -> {input port -> "source.output"}
  notice: null, // {kind: info|error|refused, text}
});

// Callbacks the app installs for node components (they cannot reach the app's bound arrays).
export const actions = {
  changed: () => {},
  runNode: (_id) => {},
  upload: async (_file) => null,
};

export function newDocId() {
  return Math.random().toString(36).slice(2, 10);
}

let noticeTimer = null;
export function notify(kind, text, ms = 6000, extra = {}) {
  ui.notice = { kind, text, ...extra };
  clearTimeout(noticeTimer);
  if (ms) noticeTimer = setTimeout(() => (ui.notice = null), ms);
}

export function portsOf(templateId) {
  const t = catalog.templates[templateId];
  if (!t) return { inputs: [], outputs: [] };
  const req = new Set(t.inputs_schema?.required ?? []);
  const inputs = Object.entries(t.inputs_schema?.properties ?? {}).map(([name, schema]) => ({
    name,
    schema,
    type: schema['x-port-type'] ?? 'any',
    required: req.has(name),
  }));
  const outputs = Object.entries(t.outputs_schema?.properties ?? {}).map(([name, schema]) => ({
    name,
    schema,
    type: schema['x-port-type'] ?? 'any',
  }));
  return { inputs, outputs };
}
