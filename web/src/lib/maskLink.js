// Linking a painted mask (an uploaded asset) to a node's mask input, through a load_mask node.
import { defaultValues, freshNodeId } from './graph.js';
import { inHandle, outHandle, portOf } from './ports.js';

export const MASK_LOADER = 'load_mask';

/**
 * The nodes and edges with `uri` feeding `port` of node `target`: the load_mask node already
 * linked there gets the new asset; otherwise a new one is placed beside the target and linked
 * (replacing whatever fed that input).
 */
export function attachMask(nodes, edges, templates, target, port, uri) {
  const feeding = edges.find((e) => e.target === target && portOf(e.targetHandle) === port);
  const loader = feeding && nodes.find((n) => n.id === feeding.source && n.data.template === MASK_LOADER);
  if (loader) {
    const values = { ...loader.data.values, asset: uri };
    return { nodes: nodes.map((n) => (n.id === loader.id ? { ...n, data: { ...n.data, values } } : n)), edges, loader: loader.id };
  }
  const t = templates[MASK_LOADER];
  if (!t) throw new Error(`the server has no '${MASK_LOADER}' template`);
  const at = nodes.find((n) => n.id === target)?.position ?? { x: 0, y: 0 };
  const node = {
    id: freshNodeId('painted_mask', nodes),
    type: 'template',
    position: { x: at.x - 320, y: at.y + 260 },
    data: { template: t.id, version: t.version, values: { ...defaultValues(t), asset: uri, channel: 'luminance' }, quality: 'standard', label: 'Painted mask' },
  };
  const edge = {
    id: `e-${node.id}-mask-${target}-${port}`,
    source: node.id,
    sourceHandle: outHandle('mask'),
    target,
    targetHandle: inHandle(port),
  };
  const kept = edges.filter((e) => !(e.target === target && portOf(e.targetHandle) === port));
  return { nodes: [...nodes, node], edges: [...kept, edge], loader: node.id };
}

/** A mask PNG (white: repaint, black: keep) from a canvas painted in any colour: its alpha. */
export function maskBlob(canvas) {
  const out = document.createElement('canvas');
  out.width = canvas.width;
  out.height = canvas.height;
  const ctx = out.getContext('2d');
  const src = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  const px = src.data;
  for (let i = 0; i < px.length; i += 4) {
    const v = px[i + 3];
    px[i] = px[i + 1] = px[i + 2] = v;
    px[i + 3] = 255;
  }
  ctx.putImageData(src, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, 'image/png'));
}

/**
 * What the painter paints over for a node's mask input `port`: the node feeding its `image`
 * input (else its first other linked input): that node's latest result in this canvas's run, if
 * any, and its width/height values.
 */
export function painterSource(links, getNode, runNodes, port) {
  const ref = links.image ?? Object.entries(links).find(([p]) => p !== port)?.[1] ?? '';
  const source = ref.split('.')[0];
  const values = (source && getNode(source)?.data?.values) || {};
  const width = Number(values.width) || 512;
  const height = Number(values.height) || 512;
  return { backdrop: (source && runNodes?.[source]?.image) || null, width, height };
}
