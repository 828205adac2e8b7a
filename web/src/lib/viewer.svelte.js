// Which takes the viewer (TakeViewer.svelte, loaded on first use) shows: the list it pages
// through and the one open (-1: closed).
export const viewer = $state({ takes: [], index: -1, project: null });

/** Open the viewer on `take` of `takes` (the takes panel's list, newest first). */
export function openViewer(takes, take, project) {
  viewer.takes = takes;
  viewer.project = project;
  viewer.index = Math.max(0, takes.findIndex((t) => t.take_id === take.take_id));
}
