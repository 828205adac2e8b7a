// Node handling on the canvas: copy/paste/duplicate (also across tabs), the quick-add picker,
// the node context menu, bypass and collapse, group frames that drag their members, link
// re-routing and the compatible-target marks while a link is dragged.
// The editor owns the node and edge arrays; it hands `createNodeOps` getters and setters.

import { catalog, portsOf, notify } from './store.svelte.js';
import { linkCompatible, portOf } from './ports.js';
import { defaultValues, freshNodeId, makeEdge } from './graph.js';
import { FRAME, NOTE, decorate, isTemplateNode, makeAnnotation } from './annotations.js';
import './nodeOps.css';

export const CLIPBOARD_KEY = 'takeflow.clipboard.v1';
const CLIPBOARD_FORMAT = 'takeflow.clipboard/v1';

/** What the picker, the menu and the handles show; read by the node components. */
export const nodeui = $state({
  picker: null, // {x, y, at: flow position, from: {nodeId, handle, handleType, portType} | null}
  menu: null, // {x, y, id}
  linkDrag: null, // {nodeId, handleType, portType} while a link is dragged
});

/** The class of a handle while a link is dragged: which ends would take it. */
export function handleMark(nodeId, kind, type) {
  const d = nodeui.linkDrag;
  if (!d || (kind === 'in') === (d.handleType === 'target')) return '';
  if (nodeId === d.nodeId) return 'tf-incompatible';
  const ok = d.handleType === 'source' ? linkCompatible(d.portType, type) : linkCompatible(type, d.portType);
  return ok ? 'tf-compatible' : 'tf-incompatible';
}

const clone = (v) => JSON.parse(JSON.stringify(v ?? null));
const typing = (e) => /^(INPUT|TEXTAREA|SELECT)$/.test(e?.target?.tagName ?? '') || e?.target?.isContentEditable;

/** A clipboard payload of the nodes `ids` and the links among them. */
export function payloadOf(nodes, edges, ids) {
  const picked = nodes.filter((n) => ids.has(n.id));
  return {
    format: CLIPBOARD_FORMAT,
    nodes: picked.map((n) => ({
      id: n.id,
      type: n.type ?? 'template',
      position: { x: n.position.x, y: n.position.y },
      data: clone(n.data),
      ...(n.width ? { width: n.width } : {}),
      ...(n.height ? { height: n.height } : {}),
    })),
    edges: edges
      .filter((e) => ids.has(e.source) && ids.has(e.target))
      .map(({ source, sourceHandle, target, targetHandle }) => ({ source, sourceHandle, target, targetHandle })),
  };
}

export function parsePayload(text) {
  try {
    const p = JSON.parse(text);
    return p?.format === CLIPBOARD_FORMAT && Array.isArray(p.nodes) && p.nodes.length ? p : null;
  } catch {
    return null;
  }
}

/** Nodes and links of `payload` with fresh ids, their top-left corner at `at`. */
export function placed(payload, at, existing) {
  const taken = [...existing];
  const idOf = {};
  const minX = Math.min(...payload.nodes.map((n) => n.position.x));
  const minY = Math.min(...payload.nodes.map((n) => n.position.y));
  const nodes = payload.nodes.map((n) => {
    const id = freshNodeId(n.type === 'template' ? n.data.template : n.type, taken);
    taken.push({ id });
    idOf[n.id] = id;
    const position = { x: at.x + n.position.x - minX, y: at.y + n.position.y - minY };
    return decorate({ ...n, id, position, data: clone(n.data), selected: true });
  });
  const edges = payload.edges
    .filter((e) => idOf[e.source] && idOf[e.target])
    .map((e) => makeEdge(idOf[e.source], portOf(e.sourceHandle), idOf[e.target], portOf(e.targetHandle)));
  return { nodes, edges };
}

/** Fuzzy score of `query` against a template (name, id, category, port types); 0: no match. */
export function pickScore(query, t) {
  const q = query.trim().toLowerCase();
  if (!q) return 1;
  const name = `${t.name ?? ''} ${t.id}`.toLowerCase();
  const ports = t.kind ? '' : [...portsOf(t.id).inputs, ...portsOf(t.id).outputs].map((p) => p.type).join(' ');
  const hay = `${name} ${t.category ?? ''} ${ports} ${t.description ?? ''}`.toLowerCase();
  if (name.startsWith(q)) return 100;
  if (name.includes(q)) return 80;
  if (hay.includes(q)) return 60;
  let i = 0;
  for (const ch of name) if (ch === q[i]) i++;
  if (i === q.length) return 40 - Math.min(30, name.length - q.length);
  return 0;
}

/** The port of template `t` a link from `from` would use (first compatible), or null. */
export function portFor(t, from) {
  if (!from) return null;
  const ports = portsOf(t.id);
  if (from.handleType === 'source') return ports.inputs.find((p) => linkCompatible(from.portType, p.type)) ?? null;
  return ports.outputs.find((p) => linkCompatible(p.type, from.portType)) ?? null;
}

/**
 * ctx: {nodes(), setNodes(list), edges(), setEdges(list), commit(), styleEdges(list), flow}
 * where `flow` is useSvelteFlow()'s result.
 */
export function createNodeOps(ctx) {
  let pointer = null; // last pointer position over the canvas (client coordinates)
  let pastedByEvent = false;
  let reconnecting = false;
  let drags = []; // frames being dragged: {id, start, members: [{id, x, y}]}
  let altCopy = null; // Alt+drag: what to leave behind where the drag started

  const flowAt = (client) => ctx.flow.screenToFlowPosition(client);
  const selectedIds = () => new Set(ctx.nodes().filter((n) => n.selected).map((n) => n.id));

  function insert(payload, at) {
    const { nodes, edges } = placed(payload, at, ctx.nodes());
    ctx.setNodes([...ctx.nodes().map((n) => (n.selected ? { ...n, selected: false } : n)), ...nodes]);
    ctx.setEdges(ctx.styleEdges([...ctx.edges().map((e) => (e.selected ? { ...e, selected: false } : e)), ...edges]));
    ctx.commit();
    return nodes;
  }

  function copy() {
    const ids = selectedIds();
    if (!ids.size) return false;
    const text = JSON.stringify(payloadOf(ctx.nodes(), ctx.edges(), ids));
    localStorage.setItem(CLIPBOARD_KEY, text); // other tabs of this editor read it
    navigator.clipboard?.writeText?.(text).catch(() => {}); // other browsers, when allowed
    notify('info', `Copied ${ids.size} node(s)`, 2500);
    return true;
  }

  function pasteAt(payload) {
    const at = pointer ? flowAt(pointer) : { x: payload.nodes[0].position.x + 40, y: payload.nodes[0].position.y + 40 };
    const added = insert(payload, at);
    notify('info', `Pasted ${added.length} node(s)`, 2500);
  }

  function duplicate(ids = selectedIds()) {
    if (!ids.size) return false;
    const payload = payloadOf(ctx.nodes(), ctx.edges(), ids);
    const first = payload.nodes.reduce((a, n) => ({ x: Math.min(a.x, n.position.x), y: Math.min(a.y, n.position.y) }), { x: Infinity, y: Infinity });
    insert(payload, { x: first.x + 40, y: first.y + 40 });
    return true;
  }

  function remove(ids) {
    ctx.setNodes(ctx.nodes().filter((n) => !ids.has(n.id)));
    ctx.setEdges(ctx.edges().filter((e) => !ids.has(e.source) && !ids.has(e.target)));
    ctx.commit();
  }

  function updateData(id, patch) {
    ctx.setNodes(ctx.nodes().map((n) => (n.id === id ? { ...n, data: { ...n.data, ...patch } } : n)));
    ctx.commit();
  }

  /** A new template node (or note/frame) at flow position `at`, linked to `from` if given. */
  function add(kind, at, from = null) {
    let node;
    if (kind === NOTE || kind === FRAME) {
      node = makeAnnotation(kind, freshNodeId(kind, ctx.nodes()), at);
    } else {
      const t = catalog.templates[kind];
      if (!t) return null;
      const data = { template: t.id, version: t.version, values: defaultValues(t), quality: 'standard', label: '' };
      node = { id: freshNodeId(t.id, ctx.nodes()), type: 'template', position: at, data };
    }
    let edges = ctx.edges();
    const port = from && node.type === 'template' ? portFor(catalog.templates[kind], from) : null;
    if (port && from.handleType === 'source') {
      edges = [...edges, makeEdge(from.nodeId, portOf(from.handle), node.id, port.name)];
    } else if (port) {
      const into = (e) => e.target === from.nodeId && e.targetHandle === from.handle;
      edges = [...edges.filter((e) => !into(e)), makeEdge(node.id, port.name, from.nodeId, portOf(from.handle))];
    }
    ctx.setNodes([...ctx.nodes(), node]);
    ctx.setEdges(ctx.styleEdges(edges));
    ctx.commit();
    return node;
  }

  function portTypeOf(nodeId, handle, handleType) {
    const n = ctx.nodes().find((x) => x.id === nodeId);
    if (!n || !isTemplateNode(n)) return null;
    const list = portsOf(n.data.template)[handleType === 'source' ? 'outputs' : 'inputs'];
    return list.find((p) => p.name === portOf(handle))?.type ?? null;
  }

  function openPicker(client, from = null) {
    nodeui.menu = null;
    nodeui.picker = { x: client.x, y: client.y, at: flowAt(client), from };
  }

  const EMPTY_CANVAS = '.svelte-flow__node, .svelte-flow__edge, .svelte-flow__edgeupdater, .svelte-flow__panel, .svelte-flow__handle';

  return {
    copy,
    duplicate,
    remove,
    updateData,
    add,
    openPicker,
    pick(kind) {
      const p = nodeui.picker;
      nodeui.picker = null;
      if (p) add(kind, p.at, p.from);
    },
    toggle(id, key) {
      const n = ctx.nodes().find((x) => x.id === id);
      if (n) updateData(id, { [key]: !n.data?.[key] });
    },
    track(e) {
      pointer = { x: e.clientX, y: e.clientY };
    },
    /** Ctrl+C, Ctrl+V, Ctrl+D; true when handled. */
    keydown(e) {
      if (typing(e) || !(e.ctrlKey || e.metaKey) || e.shiftKey || e.altKey) return false;
      const key = e.key.toLowerCase();
      if (key === 'c') return copy() && (e.preventDefault(), true);
      if (key === 'd') {
        e.preventDefault();
        duplicate();
        return true;
      }
      if (key === 'v') {
        // the browser's paste event comes first when it has our JSON (also from another browser)
        pastedByEvent = false;
        setTimeout(() => {
          if (pastedByEvent) return;
          const payload = parsePayload(localStorage.getItem(CLIPBOARD_KEY));
          if (payload) pasteAt(payload);
        }, 0);
        return true;
      }
      return false;
    },
    paste(e) {
      if (typing(e)) return;
      const payload = parsePayload(e.clipboardData?.getData('text/plain') ?? '');
      if (!payload) return;
      e.preventDefault();
      pastedByEvent = true;
      pasteAt(payload);
    },
    dblclick(e) {
      if (!e.target?.closest?.('.svelte-flow') || e.target.closest(EMPTY_CANVAS)) return;
      openPicker({ x: e.clientX, y: e.clientY });
    },
    contextmenu({ node, event }) {
      event.preventDefault();
      nodeui.picker = null;
      nodeui.menu = { x: event.clientX, y: event.clientY, id: node.id };
    },
    connectStart(_e, params) {
      const type = portTypeOf(params.nodeId, params.handleId, params.handleType);
      nodeui.linkDrag = type ? { nodeId: params.nodeId, handleType: params.handleType, portType: type } : null;
    },
    /** A link let go over empty canvas opens the picker for a node that takes it. */
    connectEnd(event, state) {
      nodeui.linkDrag = null;
      if (reconnecting || state?.toNode || !state?.fromHandle) return;
      const pt = event.changedTouches?.[0] ?? event;
      const under = document.elementFromPoint(pt.clientX, pt.clientY);
      if (!under?.closest?.('.svelte-flow') || under.closest(EMPTY_CANVAS)) return;
      const h = state.fromHandle;
      const portType = portTypeOf(h.nodeId, h.id, h.type);
      if (portType) openPicker({ x: pt.clientX, y: pt.clientY }, { nodeId: h.nodeId, handle: h.id, handleType: h.type, portType });
    },
    reconnectStart() {
      reconnecting = true;
    },
    /** A link moved to another input: the id follows, the input's old link goes. */
    reconnected(old, c) {
      setTimeout(() => {
        const fresh = makeEdge(c.source, portOf(c.sourceHandle), c.target, portOf(c.targetHandle));
        const rest = ctx.edges().filter((e) => e.id !== old.id && !(e.target === c.target && e.targetHandle === c.targetHandle));
        ctx.setEdges(ctx.styleEdges([...rest, fresh]));
        ctx.commit();
      }, 0);
    },
    /** A link's end dropped where nothing takes it: the link is detached. */
    reconnectEnd(_e, edge, _type, state) {
      reconnecting = false;
      nodeui.linkDrag = null;
      if (state?.isValid) return;
      setTimeout(() => {
        ctx.setEdges(ctx.edges().filter((e) => e.id !== edge.id));
        ctx.commit();
      }, 0);
    },
    /** Alt+drag leaves a copy behind; a frame takes the nodes inside it along. */
    dragStart({ nodes: dragged, event }) {
      const ids = new Set(dragged.map((n) => n.id));
      // the copy is placed when the drag ends: changing the nodes mid-drag would stop it
      altCopy = event?.altKey ? { payload: payloadOf(ctx.nodes(), ctx.edges(), ids), at: topLeft(dragged) } : null;
      drags = dragged
        .filter((f) => f.type === FRAME)
        .map((f) => ({ id: f.id, start: { ...f.position }, members: membersOf(f, ctx.nodes(), ids, ctx.flow) }));
    },
    drag({ nodes: dragged }) {
      if (!drags.length) return;
      const moved = {};
      for (const d of drags) {
        const f = dragged.find((n) => n.id === d.id);
        if (!f) continue;
        const dx = f.position.x - d.start.x;
        const dy = f.position.y - d.start.y;
        for (const m of d.members) moved[m.id] = { x: m.x + dx, y: m.y + dy };
      }
      ctx.setNodes(ctx.nodes().map((n) => (moved[n.id] ? { ...n, position: moved[n.id] } : n)));
    },
    dragStop() {
      drags = [];
      if (!altCopy) return;
      const copy = altCopy;
      altCopy = null;
      setTimeout(() => {
        // on the next turn: Svelte Flow writes the dragged positions back first
        const { nodes, edges } = placed(copy.payload, copy.at, ctx.nodes());
        ctx.setNodes([...ctx.nodes(), ...nodes.map((n) => ({ ...n, selected: false }))]);
        ctx.setEdges(ctx.styleEdges([...ctx.edges(), ...edges]));
        ctx.commit();
      }, 0);
    },
  };
}

function topLeft(list) {
  return list.reduce((a, n) => ({ x: Math.min(a.x, n.position.x), y: Math.min(a.y, n.position.y) }), { x: Infinity, y: Infinity });
}

/** The nodes (not being dragged themselves) whose box lies inside frame `f`. */
function membersOf(f, nodes, dragged, flow) {
  const fw = f.width ?? f.measured?.width ?? 0;
  const fh = f.height ?? f.measured?.height ?? 0;
  return nodes
    .filter((n) => n.id !== f.id && !dragged.has(n.id))
    .filter((n) => {
      const m = flow.getInternalNode(n.id)?.measured ?? n.measured ?? {};
      const w = m.width ?? 0;
      const h = m.height ?? 0;
      return n.position.x >= f.position.x && n.position.y >= f.position.y && n.position.x + w <= f.position.x + fw && n.position.y + h <= f.position.y + fh;
    })
    .map((n) => ({ id: n.id, x: n.position.x, y: n.position.y }));
}
