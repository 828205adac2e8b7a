// Thin client of the Takeflow HTTP API (docs/integration.md).
import { auth, authHeaders, unauthorized, withToken } from './auth.svelte.js';

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? body?.detail ?? `HTTP ${status}`);
    this.status = status;
    this.body = body ?? {};
    this.code = body?.code ?? `http_${status}`;
  }
}

async function call(method, path, body, { raw = false } = {}) {
  const init = { method, headers: { ...authHeaders() } };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['content-type'] = 'application/json';
  }
  const res = await fetch(path, init);
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text };
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401) unauthorized(err.message);
    if (res.status === 403) auth.forbidden = err.message;
    throw err;
  }
  return raw ? res : data;
}

const enc = encodeURIComponent;
const list = (data, key) => (Array.isArray(data) ? data : (data?.[key] ?? data?.items ?? []));

export const api = {
  templates: async () => list(await call('GET', '/api/v1/functions/templates'), 'templates'),
  me: () => call('GET', '/api/v1/auth/me'),
  projects: async () => list(await call('GET', '/api/v1/projects'), 'projects'),
  createProject: (project_id, name) => call('POST', '/api/v1/projects', { project_id, name }),
  run: (graph, project_id, shot_id, user_id) =>
    call('POST', '/api/v1/runs', { graph, project_id, shot_id, user_id }),
  task: (taskId) => call('GET', `/api/v1/functions/tasks/${enc(taskId)}`),
  cancel: (taskId) => call('POST', `/api/v1/functions/tasks/${enc(taskId)}/cancel`),
  tasks: (params) => call('GET', `/api/v1/functions/tasks?${new URLSearchParams(params)}`),
  moveTask: (taskId, position) => call('POST', `/api/v1/functions/tasks/${enc(taskId)}/position`, { position }),
  takes: async (projectId, shotId) =>
    list(await call('GET', `/api/v1/projects/${enc(projectId)}/takes?shot_id=${enc(shotId)}`), 'takes'),
  projectTakes: async (projectId) => list(await call('GET', `/api/v1/projects/${enc(projectId)}/takes`), 'takes'),
  assemblies: async (projectId, scene) =>
    list(await call('GET', `/api/v1/projects/${enc(projectId)}/assemblies?scene=${enc(scene)}`), 'assemblies'),
  assemble: (projectId, body) => call('POST', `/api/v1/projects/${enc(projectId)}/assemblies`, body),
  setActiveTake: (projectId, shot_id, take_id) =>
    call('PUT', `/api/v1/projects/${enc(projectId)}/takes/active`, { shot_id, take_id }),
  commits: async (projectId, limit = 10) =>
    list(await call('GET', `/api/v1/projects/${enc(projectId)}/commits?limit=${limit}`), 'commits'),
  upload: (projectId, file) => {
    const form = new FormData();
    form.append('file', file, file.name);
    return call('POST', `/api/v1/projects/${enc(projectId)}/assets`, form);
  },
  canvases: async (projectId) =>
    list(await call('GET', `/api/v1/projects/${enc(projectId)}/canvases`), 'canvases'),
  loadCanvas: (projectId, name) => call('GET', `/api/v1/projects/${enc(projectId)}/canvases/${enc(name)}`),
  saveCanvas: (projectId, name, graph) =>
    call('PUT', `/api/v1/projects/${enc(projectId)}/canvases/${enc(name)}`, graph),
  renameCanvas: (projectId, name, to, overwrite = false) =>
    call('POST', `/api/v1/projects/${enc(projectId)}/canvases/${enc(name)}/rename`, { to, overwrite }),
  deleteCanvas: (projectId, name) => call('DELETE', `/api/v1/projects/${enc(projectId)}/canvases/${enc(name)}`),
};

/** The URL the browser uses to fetch a stored project file (with the token, when signed in). */
export function fileUrl(projectId, output) {
  if (output?.url) return withToken(output.url);
  const path = String(output?.path ?? output).split('/').map(enc).join('/');
  return withToken(`/api/v1/projects/${enc(projectId)}/files/${path}`);
}
