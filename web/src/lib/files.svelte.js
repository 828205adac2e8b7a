// Canvas files: JSON export and import (also by dropping a file), the unsaved-changes state and
// the undo history kept per canvas across reloads (localStorage, bounded).

import { GRAPH_FORMAT, fromGraph, defaultValues } from './graph.js';
import { ui, catalog } from './store.svelte.js';
import { api } from './api.js';

const EMPTY = '{"nodes":[],"edges":[]}'; // what the editor serializes for an empty canvas
const HISTORY_PREFIX = 'takeflow.history.';
const HISTORY_INDEX = 'takeflow.history.index';
export const HISTORY_STEPS = 50; // undo steps kept per canvas across a reload
export const HISTORY_CHARS = 300_000; // at most this much JSON per canvas ...
export const HISTORY_CANVASES = 4; // ... for this many canvases: well inside localStorage's quota

/** The canvas as last saved or loaded (`clean`) beside what the editor shows (`current`). */
export const files = $state({ current: EMPTY, clean: EMPTY, cleanName: 'untitled' });

/** A canvas name as the server stores it (what Save does to the name field). */
export function fileName(name) {
  return (String(name ?? '').trim() || 'untitled').replace(/[^A-Za-z0-9_.-]+/g, '_');
}

/** Whether the canvas differs from what was last saved or loaded (its nodes, links or name). */
export function unsaved() {
  return files.current !== files.clean || fileName(ui.canvasName) !== files.cleanName;
}

/** The editor's document `doc` is now what is saved (after Save, Load, New). */
export function markClean(doc) {
  files.current = doc;
  files.clean = doc;
  files.cleanName = fileName(ui.canvasName);
}

// ---- undo history across reloads ----------------------------------------------------------------

let timer = null;
let latest = null;

/** Record the editor's document and its history (called on every change; written soon after). */
export function remember(docId, doc, past, future) {
  files.current = doc;
  latest = { docId, doc, past, future };
  clearTimeout(timer);
  timer = setTimeout(writeHistory, 150);
}

/** Write what `remember` was last given now (also on leaving the page). */
export function writeHistory() {
  clearTimeout(timer);
  if (!latest) return;
  const { docId, doc, past, future } = latest;
  latest = null;
  const entry = bounded({ past: [...past], future: [...future], current: doc, clean: files.clean, cleanName: files.cleanName });
  const index = [docId, ...readIndex().filter((id) => id !== docId)];
  try {
    for (const old of index.slice(HISTORY_CANVASES)) localStorage.removeItem(HISTORY_PREFIX + old);
    localStorage.setItem(HISTORY_INDEX, JSON.stringify(index.slice(0, HISTORY_CANVASES)));
    localStorage.setItem(HISTORY_PREFIX + docId, JSON.stringify(entry));
  } catch {
    // storage full (or off): keep room for the canvas itself; undo still works until the page goes
    for (const id of index) localStorage.removeItem(HISTORY_PREFIX + id);
  }
}

/** The newest steps of a history that fit the bounds (the oldest undo steps go first). */
export function bounded(entry) {
  let past = entry.past.slice(-HISTORY_STEPS);
  let future = entry.future.slice(0, HISTORY_STEPS);
  const size = () => [...past, ...future].reduce((n, s) => n + s.length, entry.current.length + entry.clean.length);
  while (size() > HISTORY_CHARS && (past.length || future.length)) {
    if (past.length) past = past.slice(1);
    else future = future.slice(0, -1);
  }
  return { ...entry, past, future };
}

/** The saved history of canvas `docId`, when it ends at `doc` (what the reload shows); else null.
 * Restores the unsaved-changes state with it. */
export function restoreHistory(docId, doc) {
  let entry = null;
  try {
    entry = JSON.parse(localStorage.getItem(HISTORY_PREFIX + docId) || 'null');
  } catch {
    return null;
  }
  if (!entry || entry.current !== doc || !Array.isArray(entry.past) || !Array.isArray(entry.future)) return null;
  if (latest?.docId === docId) {
    clearTimeout(timer); // the reload's own first write would store an empty history over it
    latest = null;
  }
  files.current = doc;
  files.clean = entry.clean ?? EMPTY;
  files.cleanName = entry.cleanName ?? 'untitled';
  return { past: entry.past, future: entry.future };
}

function readIndex() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_INDEX) || '[]');
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

/** The `beforeunload` handler: a prompt while the canvas has unsaved changes. */
export function onbeforeunload(e) {
  writeHistory();
  if (!unsaved()) return;
  e.preventDefault();
  e.returnValue = ''; // older browsers want it set
}

// ---- export and import --------------------------------------------------------------------------

/** Whether `data` is a canvas graph (graph/v1: a list of nodes with ids and templates). */
export function isCanvasGraph(data) {
  return (
    !!data &&
    typeof data === 'object' &&
    data.format === GRAPH_FORMAT &&
    Array.isArray(data.nodes) &&
    data.nodes.every((n) => n && typeof n.id === 'string' && typeof n.template === 'string')
  );
}

/** Download `graph` as `<name>.takeflow.json`. */
export function exportGraph(graph) {
  const blob = new Blob([JSON.stringify(graph, null, 2) + '\n'], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = `${fileName(graph.name)}.takeflow.json`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** The canvas graph a file holds, or null when it holds something else (a take, an image). */
export async function readCanvasFile(file) {
  if (!file || (file.type && !/json/.test(file.type)) || !/\.json$/i.test(file.name ?? '')) return null;
  if (file.size > 20_000_000) return null;
  try {
    const data = JSON.parse(await file.text());
    return isCanvasGraph(data) ? data : null;
  } catch {
    return null;
  }
}

/** A name for an imported canvas: the graph's, else the file's without its suffix. */
export function importedName(graph, file) {
  return graph.name || String(file?.name ?? 'imported').replace(/(\.takeflow)?\.json$/i, '') || 'imported';
}

/** Chainable drop handler: imports the first canvas file among `fileList` through `open(graph,
 * name)` and answers true; answers false (touching nothing) when none is a canvas, so another
 * handler (a take's PNG or take.json) can have it: `dropCanvasFile(fs, open).then((done) => done || other(fs))`. */
export async function dropCanvasFile(fileList, open) {
  for (const file of Array.from(fileList ?? [])) {
    const graph = await readCanvasFile(file);
    if (graph) {
      open(graph, importedName(graph, file));
      return true;
    }
  }
  return false;
}

/** Editor nodes and edges for a graph, each input the file leaves out showing its default. */
export function docOf(graph) {
  const doc = fromGraph(graph, catalog.templates);
  for (const n of doc.nodes) {
    const t = catalog.templates[n.data.template];
    if (t) n.data.values = { ...defaultValues(t), ...n.data.values };
  }
  return doc;
}

/** Saving a loaded canvas under a new name renames it (its old file goes, in git too). The caller
 * has asked before replacing another canvas of that name. A gone old file is no error. */
export async function renameBeforeSave(project, from, to) {
  try {
    await api.renameCanvas(project, from, to, true);
  } catch (err) {
    if (err?.status !== 404) throw err;
  }
}
