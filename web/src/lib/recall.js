// Recall: a take's graph and values back onto the canvas. The graph comes from the take
// (its `take.json`, metadata `graph`), or from a take's PNG, which carries it in a `tEXt`
// chunk keyed `takeflow` (nodes/png_text.py), as ComfyUI's images carry `prompt`/`workflow`.
// The editor installs `recallHook.load(graph, label)` (it owns the canvas's nodes and edges).

export const recallHook = { load: null };
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** The graph a take recorded, with the seeds it used where the graph left them out. */
export function graphOf(info) {
  const graph = info?.graph ?? info?.metadata?.graph;
  if (!graph || !Array.isArray(graph.nodes)) return null;
  const seeds = info.seeds ?? info.metadata?.seeds ?? {};
  const copy = JSON.parse(JSON.stringify(graph)); // may be a $state proxy: structuredClone refuses those
  for (const node of copy.nodes) {
    const used = seeds[node.id];
    node.inputs ??= {};
    if (used != null && node.inputs.seed == null) node.inputs.seed = { kind: 'literal', value: used };
  }
  return copy;
}

/** The `tEXt` chunks of PNG bytes, key -> text (null when not a PNG). */
export function pngTexts(buffer) {
  const bytes = new Uint8Array(buffer);
  if (PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const latin1 = new TextDecoder('latin1');
  const texts = {};
  for (let at = 8; at + 8 <= bytes.length; ) {
    const length = view.getUint32(at);
    const kind = latin1.decode(bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + length);
    if (kind === 'tEXt') {
      const nul = data.indexOf(0);
      if (nul > 0) texts[latin1.decode(data.subarray(0, nul))] = latin1.decode(data.subarray(nul + 1));
    }
    if (kind === 'IEND') break;
    at += 12 + length;
  }
  return texts;
}

/** The graph in a dropped file: a take's PNG or its take.json; null when it carries none. */
export async function graphOfFile(file) {
  const buffer = await file.arrayBuffer();
  const texts = pngTexts(buffer);
  if (texts) return texts.takeflow ? graphOf(JSON.parse(texts.takeflow)) : null;
  try {
    const json = JSON.parse(new TextDecoder().decode(buffer));
    return json?.take_id ? graphOf(json) : null; // a take.json; a canvas file is not a take
  } catch {
    return null;
  }
}

/** Load `take`'s graph onto the canvas; false (with the reason told) when it has none. */
export function recallTake(take, notify) {
  const graph = graphOf(take);
  if (!graph) {
    notify?.('error', `${take.take_id} has no recorded graph (it was made before takes kept one)`);
    return false;
  }
  recallHook.load?.(graph, take.take_id);
  return true;
}

/** A drop on the canvas: a take's PNG or take.json is recalled (true); anything else is left to
 * the other drop handlers (false). */
export function recallDrop(event, notify) {
  const files = [...(event.dataTransfer?.files ?? [])];
  const file = files.find((f) => f.type === 'image/png' || /\.png$/i.test(f.name) || /(^|[/\\])take\.json$|\.take\.json$/i.test(f.name));
  if (!file) return false;
  event.preventDefault();
  graphOfFile(file)
    .then((graph) => {
      if (graph) recallHook.load?.(graph, file.name);
      else notify?.('error', `${file.name} carries no Takeflow graph`);
    })
    .catch((err) => notify?.('error', `Recall ${file.name}: ${err.message}`));
  return true;
}
