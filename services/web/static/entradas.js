// My tickets: every reservation of the signed-in buyer with its tickets (QR, seat, event, PDF) and cancel + refund.
//
// The list comes from GET /api/reservas (eventual: a reservation appears once it has an outcome); the ones this
// tab bought a moment ago (sessionStorage) are read directly too, so a purchase shows at once.
import { ApiError, api, blob, sesion } from "./api.js";
import { dinero, fecha, h, motivo, pintar, titulo } from "./ui.js";

const ESTADO = { confirmada: "Confirmada", rechazada: "Rechazada", cancelada: "Cancelada", pendiente: "Pendiente" };
const eventos = new Map();

async function nombreEvento(id) {
  if (!eventos.has(id)) eventos.set(id, api(`/api/eventos/${encodeURIComponent(id)}`).catch(() => ({ nombre: id, fecha: null, lugar: "" })));
  return eventos.get(id);
}

async function reservas() {
  const vistas = new Map();
  const recientes = JSON.parse(sessionStorage.getItem("eventflow.recientes") || "[]");
  await Promise.all(recientes.map(async (id) => {
    try { vistas.set(id, await api(`/api/reservas/${encodeURIComponent(id)}`)); } catch { /* gone or not ours */ }
  }));
  try {
    let offset = 0;
    for (let i = 0; i < 10 && offset !== null; i++) {
      const pagina = await api(`/api/reservas?limit=50&offset=${offset}`);
      for (const r of pagina.items) vistas.set(r.id, r);
      offset = pagina.next_offset;
    }
  } catch (err) {
    if (!(err instanceof ApiError) || ![404, 405].includes(err.status)) throw err;
  }
  return [...vistas.values()].sort((a, b) => String(b.creada_en).localeCompare(String(a.creada_en)));
}

function descargar(ruta, nombre) {
  return async () => {
    const url = await blob(ruta);
    const a = h("a", { href: url, download: nombre });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  };
}

function ticket(t) {
  const img = h("img", { class: "qr", alt: `Código QR de la entrada ${t.id}`, width: 160, height: 160 });
  blob(`/api/tickets/${encodeURIComponent(t.id)}/qr?formato=svg`).then((u) => { img.src = u; }).catch(() => { img.alt = "QR no disponible"; });
  return h("li", { class: "ticket", "data-ticket": t.id },
    img,
    h("div", {},
      h("p", {}, h("strong", {}, t.asiento ? `Asiento ${t.asiento}` : "Entrada general")),
      h("p", { class: "ayuda" }, `Entrada ${t.id}`),
      h("button", { type: "button", class: "secundario", onclick: descargar(`/api/tickets/${encodeURIComponent(t.id)}/pdf`, `entrada-${t.id}.pdf`) }, "PDF")));
}

async function tarjeta(r, recargar) {
  const ev = await nombreEvento(r.evento_id);
  const salida = h("div", { "aria-live": "polite" });
  const cancelar = r.estado === "confirmada" ? h("button", { type: "button", class: "peligro", onclick: async (e) => {
    if (!confirm(`¿Cancelar la reserva de ${ev.nombre}? Se te devuelve el importe según la política del evento.`)) return;
    e.target.disabled = true;
    try {
      const hecha = await api(`/api/reservas/${encodeURIComponent(r.id)}/cancelar`, { method: "POST", headers: { "Idempotency-Key": `cancelar-${r.id}` } });
      salida.replaceChildren(h("p", { class: "resultado ok", role: "status" }, `Reserva cancelada. Reembolso: ${dinero(hecha.reembolso_centimos)}.`));
      setTimeout(recargar, 1500);
    } catch (err) {
      e.target.disabled = false;
      salida.replaceChildren(h("p", { class: "error" }, motivo(err.motivo, err.problem)));
    }
  } }, "Cancelar reserva") : null;
  return h("li", { class: `reserva ${r.estado}`, "data-reserva": r.id, "data-estado": r.estado },
    h("h2", {}, h("a", { href: `#/evento/${encodeURIComponent(r.evento_id)}` }, ev.nombre)),
    h("p", { class: "meta" }, ev.fecha ? `${fecha(ev.fecha, true)} · ${ev.lugar}` : ""),
    h("p", {}, h("span", { class: `etiqueta ${r.estado}` }, ESTADO[r.estado] || r.estado), ` ${r.entradas.cantidad} × · ${dinero(r.importe_centimos)}`,
      r.estado === "rechazada" && r.motivo ? ` · ${motivo(r.motivo)}` : null,
      r.estado === "cancelada" ? ` · reembolso ${dinero(r.reembolso_centimos)}` : null),
    r.tickets && r.tickets.length ? h("ul", { class: "tickets" }, r.tickets.map(ticket)) : null,
    h("div", { class: "fila" },
      r.tickets && r.tickets.length > 1 ? h("button", { type: "button", class: "secundario", onclick: descargar(`/api/reservas/${encodeURIComponent(r.id)}/pdf`, `entradas-${r.id}.pdf`) }, "PDF con todas") : null,
      cancelar),
    salida);
}

export async function mostrar() {
  titulo("Mis entradas");
  if (!sesion()) { location.hash = "#/entrar?volver=%23%2Fmis-entradas"; return; }
  const lista = h("ul", { class: "reservas", id: "mis-reservas" });
  const caja = h("div", { "aria-live": "polite" }, h("p", {}, "Cargando tus entradas…"));
  pintar(h("h1", {}, "Mis entradas"), caja);
  const recargar = async () => {
    const todas = await reservas();
    if (!todas.length) { caja.replaceChildren(h("p", {}, "Todavía no compraste entradas. "), h("a", { href: "#/" }, "Ver el catálogo")); return; }
    lista.replaceChildren(...(await Promise.all(todas.map((r) => tarjeta(r, recargar)))));
    caja.replaceChildren(lista);
  };
  await recargar();
}
