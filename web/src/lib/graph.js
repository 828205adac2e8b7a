// Editor document (Svelte Flow nodes + edges) <-> takeflow.graph/v1.
// Mirrored in Python by ui_bridge/document.py; tests/ui_bridge pins both on the same fixtures.

import { inHandle, outHandle, portOf } from './ports.js';
import { isTemplateNode, toAnnotations, fromAnnotations } from './annotations.js';

export const GRAPH_FORMAT = 'takeflow.graph/v1';
export const EDITOR_FORMAT = 'takeflow.editor/v1';

/** "blend@1.2.0" -> ["blend", "1.2.0"]; "blend" -> ["blend", null]. */
export function splitRef(ref) {
  const at = ref.indexOf('@');
  return at < 0 ? [ref, null] : [ref.slice(0, at), ref.slice(at + 1)];
}

/** The template reference a saved graph pins: id plus major version. */
export function templateRef(data) {
  return data.version ? `${data.template}@${String(data.version).split('.')[0]}` : data.template;
}

/** A graph/v1 document from the editor's nodes and edges. */
export function toGraph(nodes, edges, { name = 'untitled', project = null, shot = 'main/main/main', user = 'local' } = {}) {
  const links = {};
  for (const e of edges) {
    links[e.target] ??= {};
    links[e.target][portOf(e.targetHandle)] = { kind: 'link', node: e.source, output: portOf(e.sourceHandle) };
  }
  return {
    format: GRAPH_FORMAT,
    name,
    nodes: nodes.filter(isTemplateNode).map((n) => {
      const inputs = {};
      for (const [port, value] of Object.entries(n.data.values ?? {})) {
        if (value === undefined || value === null) continue;
        inputs[port] = { kind: 'literal', value };
      }
      Object.assign(inputs, links[n.id] ?? {});
      const properties = { quality: n.data.quality ?? 'standard' };
      if (n.data.label) properties.label = n.data.label;
      if (n.data.bypass) properties.bypass = true;
      if (n.data.collapsed) properties.collapsed = true;
      return {
        id: n.id,
        template: templateRef(n.data),
        inputs: sortKeys(inputs),
        properties,
        position: { x: Math.round(n.position.x), y: Math.round(n.position.y) },
      };
    }),
    context: { project, shot, user },
    annotations: toAnnotations(nodes),
  };
}

/** Editor nodes and edges from a graph/v1 document; `templates` gives versions where known. */
export function fromGraph(graph, templates = {}) {
  const nodes = [];
  const edges = [];
  graph.nodes.forEach((gn, i) => {
    const [id, pinned] = splitRef(gn.template);
    const known = templates[id];
    const values = {};
    for (const [port, input] of Object.entries(gn.inputs ?? {})) {
      if (input.kind === 'link') {
        edges.push(makeEdge(input.node, input.output, gn.id, port));
      } else {
        values[port] = input.value;
      }
    }
    nodes.push({
      id: gn.id,
      type: 'template',
      position: gn.position ?? { x: 40 + (i % 4) * 320, y: 40 + Math.floor(i / 4) * 260 },
      data: {
        template: id,
        version: known?.version ?? (pinned ? normalizeVersion(pinned) : null),
        values,
        quality: gn.properties?.quality ?? 'standard',
        label: gn.properties?.label ?? '',
        ...(gn.properties?.bypass ? { bypass: true } : {}),
        ...(gn.properties?.collapsed ? { collapsed: true } : {}),
      },
    });
  });
  nodes.push(...fromAnnotations(graph.annotations));
  return { nodes, edges };
}

export function makeEdge(source, output, target, input) {
  return {
    id: `e-${source}-${output}-${target}-${input}`,
    source,
    sourceHandle: outHandle(output),
    target,
    targetHandle: inHandle(input),
  };
}

function normalizeVersion(v) {
  const parts = String(v).split('.');
  while (parts.length < 3) parts.push('0');
  return parts.join('.');
}

function sortKeys(obj) {
  return Object.fromEntries(Object.keys(obj).sort().map((k) => [k, obj[k]]));
}

/** The node and everything it needs (for "run this node"). */
export function upstreamClosure(nodeId, edges) {
  const keep = new Set([nodeId]);
  const stack = [nodeId];
  while (stack.length) {
    const cur = stack.pop();
    for (const e of edges) {
      if (e.target === cur && !keep.has(e.source)) {
        keep.add(e.source);
        stack.push(e.source);
      }
    }
  }
  return keep;
}

/** Whether adding source -> target would close a loop. */
export function wouldCycle(source, target, edges) {
  return source === target || upstreamClosure(source, edges).has(target);
}

/** A fresh node id for a template, unique among `nodes`, valid for graph/v1. */
export function freshNodeId(templateId, nodes) {
  const taken = new Set(nodes.map((n) => n.id));
  for (let i = 1; ; i++) {
    const id = `${templateId}_${i}`;
    if (!taken.has(id)) return id;
  }
}

/** Default literal values from a template's inputs schema (links-only types get none). */
export function defaultValues(template) {
  const values = {};
  for (const [port, schema] of Object.entries(template.inputs_schema?.properties ?? {})) {
    const type = schema['x-port-type'];
    if (type === 'image' || type === 'mask') continue;
    if (schema.default !== undefined) values[port] = schema.default;
    else if (type === 'asset') values[port] = '';
  }
  return values;
}
