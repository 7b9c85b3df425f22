// Small DOM helpers, formats and Spanish wording shared by every page. No framework: `h()` builds elements and
// text always goes in as text (never as HTML), so nothing a user typed can run as markup.

export function h(tag, attrs = {}, ...hijos) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const hijo of hijos.flat(Infinity)) {
    if (hijo === null || hijo === undefined || hijo === false) continue;
    el.append(hijo instanceof Node ? hijo : document.createTextNode(String(hijo)));
  }
  return el;
}

// The hash the page being shown was opened for (set by the router): a page that finishes loading after the
// user moved on paints nothing over the newer page.
let rutaActual = null;
export function empezarRuta() { rutaActual = location.hash; }

export function pintar(...hijos) {
  const main = document.getElementById("contenido");
  if (rutaActual !== null && location.hash !== rutaActual) return main;
  main.replaceChildren(...hijos.flat());
  return main;
}

export function avisar(texto, ms = 4000) {
  const caja = document.getElementById("avisos");
  const aviso = h("div", { class: "aviso" }, texto);
  caja.append(aviso);
  setTimeout(() => aviso.remove(), ms);
}

const fechaLarga = new Intl.DateTimeFormat("es-AR", { dateStyle: "full", timeStyle: "short" });
const fechaCorta = new Intl.DateTimeFormat("es-AR", { dateStyle: "medium", timeStyle: "short" });
const hora = new Intl.DateTimeFormat("es-AR", { timeStyle: "medium" });

export function fecha(iso, larga = false) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : (larga ? fechaLarga : fechaCorta).format(d);
}
export function soloHora(iso) { const d = new Date(iso); return Number.isNaN(d.getTime()) ? iso : hora.format(d); }

const pesos = new Intl.NumberFormat("es-AR", { style: "currency", currency: "ARS" });
export function dinero(centimos) { return pesos.format((centimos || 0) / 100); }

export function quedan(n) {
  if (n <= 0) return h("span", { class: "etiqueta agotado" }, "agotado");
  return h("span", { class: n <= 10 ? "etiqueta pocas" : "etiqueta" }, n === 1 ? "queda 1" : `quedan ${n}`);
}

// The API's `motivo` codes, in words a buyer understands.
const MOTIVOS = {
  card_declined: "La tarjeta fue rechazada por el banco.",
  insufficient_funds: "La tarjeta no tiene fondos suficientes.",
  expired_card: "La tarjeta está vencida.",
  incorrect_cvc: "El código de seguridad no es correcto.",
  processing_error: "El procesador de pagos no respondió a tiempo. No se te cobró nada; probá de nuevo.",
  authorization_voided: "El pago se anuló. No se te cobró nada.",
  agotado: "Se agotaron las entradas mientras comprabas.",
  asientos_ocupados: "Alguien tomó esos asientos antes que vos. Elegí otros.",
  asientos_invalidos: "Esos asientos no existen en este evento.",
  asientos_inexistentes: "Esos asientos no existen en este evento.",
  limite_por_usuario: "Superás el límite de entradas por persona para este evento.",
  reserva_expirada: "La reserva expiró antes de completar el pago. No se te cobró nada.",
  venta_no_iniciada: "La venta todavía no empezó.",
  evento_pasado: "El evento ya pasó.",
  evento_inexistente: "El evento no existe.",
  evento_sin_asientos: "Este evento no tiene asientos numerados.",
  cantidad_invalida: "La cantidad no es válida para este evento.",
  tarjeta_invalida: "Los datos de la tarjeta no son válidos.",
  incorrect_number: "El número de tarjeta no es válido.",
  invalid_expiry: "El vencimiento debe tener la forma MM/AA.",
  invalid_cvc: "El código de seguridad debe tener 3 o 4 dígitos.",
  card_not_supported: "Solo aceptamos Visa, Mastercard y American Express.",
  pago_no_procesable: "No se pudo procesar el pago. No se te cobró nada.",
  usuario_inexistente: "Tu cuenta ya no existe.",
  captura_rechazada: "El procesador rechazó el cobro. No se te cobró nada.",
  no_disponible: "El servicio no estuvo disponible. No se te cobró nada; probá de nuevo.",
};
export function motivo(codigo, problema) {
  const clave = (problema && problema.codigo) || codigo;
  return MOTIVOS[clave] || MOTIVOS[codigo] || (problema && problema.detail) || `No se pudo completar (${codigo || "error"}).`;
}

export function titulo(texto) { document.title = `${texto} · EventFlow`; }

// Hash routes (#/evento/<id>): no server routing needed, and a reload keeps the page.
export function ruta() {
  const partes = (location.hash.replace(/^#\/?/, "") || "").split("?")[0].split("/").filter(Boolean);
  return partes.map(decodeURIComponent);
}
export function parametros() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}
export function ir(hash) { if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange")); else location.hash = hash; }
