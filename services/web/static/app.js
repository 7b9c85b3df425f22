// The single page: a hash router, the session bar, and one module per page. No build step: ES modules as they are.
import { alCambiarSesion, salir, sesion, tieneRol } from "./api.js";
import { empezarRuta, h, ruta } from "./ui.js";

const PAGINAS = {
  "": () => import("./catalogo.js"),
  evento: () => import("./evento.js"),
  entrar: () => import("./cuenta.js"),
  "mis-entradas": () => import("./entradas.js"),
  organizador: () => import("./organizador.js"),
  admin: () => import("./admin.js"),
  puerta: () => import("./puerta.js"),
};

let limpiar = null;
let vuelta = 0; // the latest navigation: an earlier one whose module loads later must not paint over it

async function mostrar() {
  if (limpiar) { try { limpiar(); } catch { /* a page's cleanup never blocks the next page */ } limpiar = null; }
  const mia = ++vuelta;
  empezarRuta();
  const [pagina = "", ...resto] = ruta();
  const cargar = PAGINAS[pagina] || PAGINAS[""];
  marcarMenu(pagina);
  const main = document.getElementById("contenido");
  let modulo;
  try {
    modulo = await cargar();
  } catch {
    if (mia === vuelta) main.replaceChildren(h("h1", {}, "Sin conexión"), h("p", { class: "error" }, "No se pudo cargar la página: revisá la conexión y volvé a intentar."));
    return;
  }
  if (mia !== vuelta) return;
  try {
    const fin = (await modulo.mostrar(resto)) || null;
    if (mia !== vuelta) { if (fin) fin(); return; } // superseded while it loaded: undo its streams
    limpiar = fin;
  } catch (err) {
    if (mia !== vuelta) return;
    main.replaceChildren(h("h1", {}, "Algo salió mal"), h("p", { class: "error" }, err.message || String(err)));
  }
  if (document.activeElement === document.body) main.focus({ preventScroll: true });
}

function marcarMenu(pagina) {
  for (const a of document.querySelectorAll("#menu a")) {
    const destino = a.getAttribute("href").replace(/^#\/?/, "");
    if (destino === pagina) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function barraDeSesion() {
  const caja = document.getElementById("sesion");
  const s = sesion();
  for (const li of document.querySelectorAll("#menu [data-rol]")) li.hidden = !tieneRol(...li.dataset.rol.split(" "));
  if (!s) {
    caja.replaceChildren(h("a", { href: "#/entrar", class: "boton secundario" }, "Entrar"));
    return;
  }
  caja.replaceChildren(
    h("span", {}, `Hola, ${s.yo.nombre || "vos"}`),
    h("button", { type: "button", onclick: async () => { await salir(); location.hash = "#/"; } }, "Salir"),
  );
}

alCambiarSesion(barraDeSesion);
window.addEventListener("hashchange", mostrar);
barraDeSesion();
mostrar();
