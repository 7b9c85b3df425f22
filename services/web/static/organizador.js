// Organizer: create an event (sections and seats, sale start, per-user limit) and each event's sales dashboard.
//
// The dashboard is three reads: sales (GET /api/eventos/{id}/ventas, a projection), held and available now
// (GET /api/disponibilidad/{id}) and check-ins (GET /api/checkin/eventos/{id}); "Actualizar" reads them again,
// and the live availability stream refreshes them when anything is bought or cancelled.
import { api, sesion, tieneRol } from "./api.js";
import { dinero, fecha, h, motivo, pintar, titulo } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, texto) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (texto !== undefined) el.textContent = texto;
  return el;
}

// Sales over time as bars: no library, an SVG the page draws.
function grafico(serie) {
  const ancho = 600; const alto = 180; const base = 150;
  const svg = s("svg", { viewBox: `0 0 ${ancho} ${alto}`, class: "grafico", role: "img", "aria-label": "Entradas vendidas por período" });
  if (!serie.length) { svg.append(s("text", { x: 10, y: 90 }, "Todavía no hay ventas")); return svg; }
  const max = Math.max(1, ...serie.map((p) => p.vendidas));
  const paso = Math.min(60, (ancho - 20) / serie.length);
  serie.forEach((p, i) => {
    const alt = Math.round((p.vendidas / max) * (base - 20));
    const x = 10 + i * paso;
    const barra = s("rect", { x, y: base - alt, width: Math.max(2, paso - 4), height: alt });
    barra.append(s("title", {}, `${fecha(p.desde)}: ${p.vendidas} vendidas, ${dinero(p.ingresos_centimos)}`));
    svg.append(barra, s("text", { x, y: base + 14 }, new Date(p.desde).toLocaleTimeString("es-AR", { hour: "2-digit", minute: "2-digit" })),
      s("text", { x, y: base - alt - 3 }, String(p.vendidas)));
  });
  return svg;
}

function tablero(evento) {
  const cuerpo = h("div", { class: "panel-ventas", "aria-live": "polite" }, h("p", {}, "Cargando…"));
  const cargar = async () => {
    const id = encodeURIComponent(evento.id);
    const [ventas, disp, checkin] = await Promise.all([
      api(`/api/eventos/${id}/ventas?por=hora`),
      api(`/api/disponibilidad/${id}`),
      api(`/api/checkin/eventos/${id}`).catch(() => ({ entradas_validadas: "—" })),
    ]);
    cuerpo.replaceChildren(
      h("ul", { class: "cifras" },
        h("li", { "data-cifra": "vendidas" }, h("strong", {}, String(disp.vendidas)), "vendidas"),
        h("li", { "data-cifra": "retenidas" }, h("strong", {}, String(disp.retenidas)), "en proceso"),
        h("li", { "data-cifra": "disponibles" }, h("strong", {}, String(disp.disponibles)), "disponibles"),
        h("li", { "data-cifra": "ingresos" }, h("strong", {}, dinero(ventas.neto_centimos)), "ingresos netos"),
        h("li", { "data-cifra": "checkins" }, h("strong", {}, String(checkin.entradas_validadas)), "ingresaron")),
      h("p", { class: "ayuda" }, `${ventas.reservas} reservas · ${ventas.canceladas} canceladas · reembolsado ${dinero(ventas.reembolsado_centimos)}`),
      grafico(ventas.serie || []));
  };
  let fuente = null; let pendiente = null;
  const abrir = () => {
    cargar().catch((err) => cuerpo.replaceChildren(h("p", { class: "error" }, err.message)));
    fuente = new EventSource(`/api/disponibilidad/${encodeURIComponent(evento.id)}/en-vivo`);
    fuente.addEventListener("cambio", () => { clearTimeout(pendiente); pendiente = setTimeout(() => cargar().catch(() => {}), 700); });
  };
  const caja = h("details", { class: "panel", "data-evento": evento.id },
    h("summary", {}, h("strong", {}, evento.nombre), ` · ${fecha(evento.fecha)} · ${evento.lugar}`),
    h("button", { type: "button", class: "secundario", onclick: () => cargar() }, "Actualizar"), cuerpo);
  caja.addEventListener("toggle", () => { if (caja.open && !fuente) abrir(); });
  caja.cerrar = () => { if (fuente) fuente.close(); };
  return caja;
}

function filaSeccion() {
  const fila = h("div", { class: "fila seccion-fila" },
    h("label", {}, "Sección", h("input", { name: "seccion", placeholder: "Platea" })),
    h("label", {}, "Asientos", h("input", { name: "asientos", type: "number", min: 1, max: 5000 })),
    h("button", { type: "button", class: "secundario", "aria-label": "Quitar sección", onclick: () => fila.remove() }, "Quitar"));
  return fila;
}

function formulario(alCrear) {
  const secciones = h("div", { id: "secciones" });
  const salida = h("div", { "aria-live": "polite" });
  const clave = { valor: crypto.randomUUID() };
  const form = h("form", { id: "nuevo-evento", "aria-labelledby": "t-nuevo" },
    h("h2", { id: "t-nuevo" }, "Crear un evento"),
    h("label", {}, "Nombre", h("input", { name: "nombre", required: true, maxlength: 200 })),
    h("label", {}, "Descripción", h("textarea", { name: "descripcion", rows: 2 })),
    h("div", { class: "fila" },
      h("label", {}, "Fecha y hora", h("input", { name: "fecha", type: "datetime-local", required: true })),
      h("label", {}, "Lugar", h("input", { name: "lugar", required: true }))),
    h("div", { class: "fila" },
      h("label", {}, "Precio por entrada", h("input", { name: "precio", type: "number", min: 0, step: "0.01", required: true, value: "0" })),
      h("label", {}, "Categoría", h("input", { name: "categoria", required: true, placeholder: "musica" }))),
    h("fieldset", {}, h("legend", {}, "Capacidad"),
      h("label", {}, "Entradas generales (si no hay asientos numerados)", h("input", { name: "aforo_total", type: "number", min: 1 })),
      h("p", { class: "ayuda" }, "O asientos numerados por sección (los asientos de la sección Platea se llaman Platea-1, Platea-2…):"),
      secciones,
      h("button", { type: "button", class: "secundario", id: "agregar-seccion", onclick: () => secciones.append(filaSeccion()) }, "Agregar sección")),
    h("div", { class: "fila" },
      h("label", {}, "La venta empieza", h("input", { name: "venta_desde", type: "datetime-local" }), h("small", {}, "Vacío: ya mismo.")),
      h("label", {}, "Límite por persona", h("input", { name: "limite_por_usuario", type: "number", min: 1 }))),
    h("button", { type: "submit" }, "Crear evento"), salida);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const d = new FormData(form);
    const secs = [...secciones.querySelectorAll(".seccion-fila")].map((f) => ({
      nombre: f.querySelector("[name=seccion]").value.trim(), asientos: Number(f.querySelector("[name=asientos]").value) }))
      .filter((x) => x.nombre && x.asientos);
    const cuerpo = {
      nombre: d.get("nombre"), descripcion: d.get("descripcion") || "", fecha: new Date(String(d.get("fecha"))).toISOString(),
      lugar: d.get("lugar"), precio: String(d.get("precio") || "0"), categoria: d.get("categoria"),
      aforo_total: secs.length ? null : Number(d.get("aforo_total")) || null, secciones: secs.length ? secs : null,
      venta_desde: d.get("venta_desde") ? new Date(String(d.get("venta_desde"))).toISOString() : null,
      limite_por_usuario: Number(d.get("limite_por_usuario")) || null,
    };
    const boton = form.querySelector("button[type=submit]");
    boton.disabled = true;
    try {
      const creado = await api("/api/eventos", { method: "POST", json: cuerpo, headers: { "Idempotency-Key": clave.valor } });
      clave.valor = crypto.randomUUID();
      form.reset(); secciones.replaceChildren();
      salida.replaceChildren(h("p", { class: "resultado ok", role: "status" }, "Evento creado: ", h("a", { href: `#/evento/${encodeURIComponent(creado.id)}` }, creado.nombre)));
      alCrear(creado);
    } catch (err) {
      const lista = err.problem && err.problem.errors;
      salida.replaceChildren(lista ? h("ul", { class: "error" }, lista.map((x) => h("li", {}, `${x.field}: ${x.message}`)))
        : h("p", { class: "error" }, motivo(err.motivo, err.problem)));
    } finally { boton.disabled = false; }
  });
  return form;
}

export async function mostrar() {
  titulo("Organizador");
  if (!sesion()) { location.hash = "#/entrar?volver=%23%2Forganizador"; return; }
  if (!tieneRol("organizador", "admin")) { pintar(h("h1", {}, "Organizador"), h("p", { class: "error" }, "Tu cuenta no es de organizador.")); return; }
  const lista = h("div", { id: "mis-eventos" }, h("p", {}, "Cargando tus eventos…"));
  const tableros = [];
  const agregar = (ev, arriba) => { const t = tablero(ev); tableros.push(t); if (arriba) lista.prepend(t); else lista.append(t); return t; };
  pintar(h("h1", {}, "Organizador"), h("div", { class: "fila arriba" },
    h("section", { class: "panel" }, formulario((ev) => { if (lista.querySelector("p")) lista.replaceChildren(); agregar(ev, true).open = true; })),
    h("section", { "aria-labelledby": "t-mis" }, h("h2", { id: "t-mis" }, "Tus eventos"), lista)));
  const yo = sesion().yo.id;
  const r = await api(`/api/eventos?organizador_id=${encodeURIComponent(yo)}&limit=50&desde=2000-01-01T00:00:00Z`);
  lista.replaceChildren();
  if (!r.items.length) lista.append(h("p", {}, "Todavía no creaste eventos."));
  for (const ev of r.items) agregar(ev, false);
  return () => tableros.forEach((t) => t.cerrar());
}
