// The API client: the signed-in session, authorized requests, and problem details turned into errors.
//
// Tokens live in localStorage (the access token lasts at most 15 minutes; the refresh token rotates at every
// use). A refresh is done under a Web Lock shared by every tab of this origin: two concurrent refreshes of one
// refresh token would end the session (the server's reuse detection), so a tab that waited for the lock
// first looks whether another tab already refreshed.

const CLAVE = "eventflow.sesion";
const oyentes = new Set();

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
  get motivo() { return this.problem.motivo; }
}

export function sesion() {
  try { return JSON.parse(localStorage.getItem(CLAVE)) || null; } catch { return null; }
}

function guardar(datos) {
  if (datos) localStorage.setItem(CLAVE, JSON.stringify(datos));
  else localStorage.removeItem(CLAVE);
  oyentes.forEach((f) => f(datos));
}

export function alCambiarSesion(f) { oyentes.add(f); }
window.addEventListener("storage", (e) => { if (e.key === CLAVE) oyentes.forEach((f) => f(sesion())); });

async function leerProblema(resp) {
  const tipo = resp.headers.get("content-type") || "";
  if (tipo.includes("json")) { try { return await resp.json(); } catch { return null; } }
  return null;
}

async function conTokens(tokens, yo) {
  guardar({ access: tokens.access_token, refresh: tokens.refresh_token, exp: Date.now() + tokens.expires_in * 1000, yo });
}

// The token's own claims (the services check the signature; the page only reads who and which roles).
function reclamos(token) {
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), "=")));
  } catch { return {}; }
}

export async function entrar(email, password) {
  const resp = await fetch("/api/auth/token", { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password }) });
  if (!resp.ok) throw new ApiError(resp.status, await leerProblema(resp));
  const tokens = await resp.json();
  // id and roles from the token (what every service enforces); the name from the profile, which is a read
  // model and may not have the account yet right after registering: then the page greets without a name.
  const c = reclamos(tokens.access_token);
  const perfil = await fetch("/api/usuarios/me", { headers: { authorization: `Bearer ${tokens.access_token}` } });
  const yo = perfil.ok ? await perfil.json() : {};
  await conTokens(tokens, { id: c.sub || yo.id, nombre: yo.nombre || "", roles: c.roles || yo.roles || ["comprador"] });
  return yo;
}

export async function salir() {
  const s = sesion();
  guardar(null);
  if (s && s.refresh) {
    fetch("/api/auth/logout", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: s.refresh }) }).catch(() => {});
  }
}

async function refrescar(vencido) {
  const hacer = async () => {
    const actual = sesion();
    if (!actual) return null;
    if (actual.access !== vencido) return actual.access; // another tab (or request) refreshed already
    const resp = await fetch("/api/auth/refresh", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: actual.refresh }) });
    if (!resp.ok) { guardar(null); return null; }
    const tokens = await resp.json();
    const c = reclamos(tokens.access_token);
    await conTokens(tokens, { ...actual.yo, roles: c.roles || actual.yo.roles });
    return tokens.access_token;
  };
  if (navigator.locks) return navigator.locks.request("eventflow-refresh", hacer);
  return hacer();
}

// fetch with the session's token; a 401 is retried once after a refresh. Returns the Response.
export async function pedir(ruta, opciones = {}) {
  const s = sesion();
  const headers = new Headers(opciones.headers || {});
  if (opciones.json !== undefined) {
    headers.set("content-type", "application/json");
    opciones = { ...opciones, body: JSON.stringify(opciones.json) };
  }
  let token = s && s.access;
  if (token && s.exp - Date.now() < 20_000) token = await refrescar(token);
  if (token) headers.set("authorization", `Bearer ${token}`);
  let resp = await fetch(ruta, { ...opciones, headers });
  if (resp.status === 401 && token) {
    const nuevo = await refrescar(token);
    if (nuevo) {
      headers.set("authorization", `Bearer ${nuevo}`);
      resp = await fetch(ruta, { ...opciones, headers });
    }
  }
  return resp;
}

// JSON in, JSON out; a problem answer becomes an ApiError.
export async function api(ruta, opciones = {}) {
  const resp = await pedir(ruta, opciones);
  if (!resp.ok) throw new ApiError(resp.status, await leerProblema(resp));
  if (resp.status === 204) return null;
  return resp.json();
}

// An authorized download (QR image, PDF) as an object URL.
export async function blob(ruta) {
  const resp = await pedir(ruta);
  if (!resp.ok) throw new ApiError(resp.status, await leerProblema(resp));
  return URL.createObjectURL(await resp.blob());
}

export function tieneRol(...roles) {
  const s = sesion();
  return !!(s && s.yo && roles.some((r) => (s.yo.roles || []).includes(r)));
}
