// The scene view (SceneView.svelte, loaded on first use): open or not, and on which scene.
export const sceneView = $state({ open: false, project: null, scene: '' });

/** The scene (chapter/scene) a shot id belongs to: `ch01/sc01/sh010` -> `ch01/sc01`. */
export function sceneOf(shot) {
  const parts = String(shot ?? '').split('/').filter(Boolean);
  return parts.length >= 2 ? parts.slice(0, 2).join('/') : '';
}

/** Open the scene view on the scene of `shot` in `project`. */
export function openScene(project, shot) {
  sceneView.project = project;
  sceneView.scene = sceneOf(shot) || sceneView.scene;
  sceneView.open = true;
}
