// Notes and group frames: canvas nodes that are not templates. They travel in a graph's
// `annotations` (never run, validated or hashed); a group drags the nodes inside its frame.

export const NOTE = 'note';
export const FRAME = 'frame';

/** Whether an editor node is a template instance (what runs), not a note or a frame. */
export const isTemplateNode = (n) => (n.type ?? 'template') === 'template';

/** Svelte Flow settings a frame needs: drag by its title, drawn behind the nodes. */
export function decorate(n) {
  if (n.type === FRAME) return { ...n, dragHandle: '.tf-frame-title', zIndex: -1 };
  if (n.type === NOTE) return { ...n, dragHandle: '.tf-note-grip' };
  return n;
}

export function makeAnnotation(type, id, position) {
  const data = type === FRAME ? { text: 'Group' } : { text: '' };
  const size = type === FRAME ? { width: 520, height: 340 } : { width: 220, height: 120 };
  return decorate({ id, type, position, data, ...size });
}

function size(n) {
  return { width: n.width ?? n.measured?.width, height: n.height ?? n.measured?.height };
}

/** graph/v1 `annotations` from the editor's note and frame nodes (undefined when none). */
export function toAnnotations(nodes) {
  const list = nodes
    .filter((n) => n.type === NOTE || n.type === FRAME)
    .map((n) => {
      const { width, height } = size(n);
      const a = {
        id: n.id,
        kind: n.type === FRAME ? 'group' : 'note',
        text: n.data?.text ?? '',
        position: { x: Math.round(n.position.x), y: Math.round(n.position.y) },
      };
      if (width) a.width = Math.round(width);
      if (height) a.height = Math.round(height);
      return a;
    });
  return list.length ? list : undefined;
}

/** Editor nodes for a graph's `annotations`. */
export function fromAnnotations(list) {
  return (list ?? []).map((a) =>
    decorate({
      id: a.id,
      type: a.kind === 'group' ? FRAME : NOTE,
      position: a.position,
      data: { text: a.text ?? '' },
      ...(a.width ? { width: a.width } : {}),
      ...(a.height ? { height: a.height } : {}),
    }),
  );
}
