// Port types, their colours, and link compatibility (mirrors graph_runtime/templates.py).

export const PORT_COLORS = {
  text: '#e6b450',
  integer: '#39bae6',
  float: '#73d0ff',
  boolean: '#d2a6ff',
  image: '#7fd962',
  mask: '#f07178',
  asset: '#ff8f40',
  json: '#95e6cb',
  control: '#c792ea',
  model: '#c594c5',
  video: '#ff6ac1',
  any: '#b3b1ad',
};

const WIDENINGS = { integer: ['float'], mask: ['image'], asset: ['image'], text: ['model'] };

/** Whether an output of type `source` may feed an input of type `target`. */
export function linkCompatible(source, target) {
  if (source === target || source === 'any' || target === 'any') return true;
  return (WIDENINGS[source] ?? []).includes(target);
}

export function portColor(type) {
  return PORT_COLORS[type] ?? PORT_COLORS.any;
}

/** Handle ids: inputs and outputs may share a name (resize: image -> image). */
export const inHandle = (port) => `in-${port}`;
export const outHandle = (port) => `out-${port}`;
export const portOf = (handle) => (handle ?? '').replace(/^(in|out)-/, '');
