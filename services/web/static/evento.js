// Event page: details, availability and seat map updated live (Server-Sent Events), and the checkout.
//
// Buying twice by accident is impossible by construction: the page makes the Idempotency-Key, keeps it in
// sessionStorage with the selection it is for, and sends the same key again for the same selection (a double
// click, a retry after a network error, a reload in the middle). The server answers a repeated key with the
// reservation it already made. A new key is made only for another selection, or after an outcome was shown.
import { ApiError, api, sesion } from "./api.js";
import { formularios } from "./cuenta.js";
import { dinero, fecha, h, motivo, pintar, quedan, titulo } from "./ui.js";

const MAPA_MAX = 3000; // seats drawn one by one up to this; bigger venues get seats assigned automatically
const ESTADOS = { L: "libre", R: "reservado por otra persona", V: "vendido" };
const TARJETAS = [
  ["4242 4242 4242 4242", "aprobada"],
  ["4000 0000 0000 0002", "rechazada (card_declined)"],
  ["4000 0000 0000 9995", "fondos insuficientes"],
  ["4000 0000 0000 0069", "vencida"],
  ["4000 0000 0000 0127", "CVC incorrecto"],
  ["4000 0000 0000 0119", "error del procesador"],
];

function clavePara(eventoId, seleccion) {
  const nombre = `eventflow.compra.${eventoId}`;
  let guardada = null;
  try { guardada = JSON.parse(sessionStorage.getItem(nombre)); } catch { /* none */ }
  if (guardada && guardada.seleccion === seleccion) return guardada.clave;
  const clave = crypto.randomUUID();
  sessionStorage.setItem(nombre, JSON.stringify({ clave, seleccion }));
  return clave;
}
function olvidarClave(eventoId) { sessionStorage.removeItem(`eventflow.compra.${eventoId}`); }
function compraPendiente(eventoId) {
  try { return JSON.parse(sessionStorage.getItem(`eventflow.compra.${eventoId}`)); } catch { return null; }
}

function cargoPorEntrada(precio) { return precio === 0 ? 0 : Math.max(50, Math.round(precio * 0.05)); }

export async function mostrar([eventoId]) {
  const evento = await api(`/api/eventos/${encodeURIComponent(eventoId)}`);
  const config = await fetch("/web-config.json").then((r) => r.json()).catch(() => ({}));
  titulo(evento.nombre);
  const pasado = new Date(evento.fecha) < new Date();
  const numerado = !!evento.secciones;
  const dibujarMapa = numerado && evento.aforo_total <= MAPA_MAX;
  const estado = { disponibles: evento.entradas_disponibles, vendidas: 0, retenidas: 0, asientos: new Map(), elegidos: new Set(), comprando: false };

  const cifraDisp = h("strong", { id: "disponibles" }, String(evento.entradas_disponibles));
  const cifraRet = h("strong", {}, "0");
  const vivo = h("span", { class: "ayuda", id: "en-vivo" }, "conectando…");
  const cifras = h("ul", { class: "cifras", "aria-live": "polite" },
    h("li", {}, cifraDisp, "disponibles"), h("li", {}, cifraRet, "en proceso de compra"), h("li", {}, vivo));

  const mapa = h("div", { class: "mapa", role: "group", "aria-label": "Mapa de asientos" });
  const botones = new Map();
  if (dibujarMapa) {
    for (const s of evento.secciones) {
      const grilla = h("div", { class: "asientos" });
      for (let n = 1; n <= s.asientos; n++) {
        const id = `${s.nombre}-${n}`;
        const b = h("button", { type: "button", class: "asiento", "data-asiento": id, "aria-pressed": "false" }, String(n));
        b.addEventListener("click", () => alternar(id));
        botones.set(id, b);
        grilla.append(b);
      }
      mapa.append(h("section", { class: "seccion" }, h("h3", {}, s.nombre), grilla));
    }
    mapa.append(h("ul", { class: "leyenda" },
      h("li", {}, h("span", { class: "libre-m" }), "libre"), h("li", {}, h("span", { class: "retenido-m" }), "en proceso de compra"),
      h("li", {}, h("span", { class: "vendido-m" }), "vendido"), h("li", {}, h("span", { class: "elegido-m" }), "elegido por vos")));
  }

  const elegidosTexto = h("p", { "aria-live": "polite", id: "elegidos" });
  const maximo = evento.max_por_solicitud;
  function pintarAsiento(id) {
    const b = botones.get(id);
    if (!b) return;
    const e = estado.asientos.get(id) || "L";
    const mio = estado.elegidos.has(id);
    b.dataset.estado = e;
    b.setAttribute("aria-pressed", String(mio));
    b.setAttribute("aria-label", `${id.replace(/-(\d+)$/, ", asiento $1")}: ${mio ? "elegido" : ESTADOS[e]}`);
    b.disabled = e !== "L" && !mio;
  }
  function alternar(id) {
    if (estado.comprando) return;
    if (estado.elegidos.has(id)) estado.elegidos.delete(id);
    else if ((estado.asientos.get(id) || "L") === "L" && estado.elegidos.size < maximo) estado.elegidos.add(id);
    pintarAsiento(id);
    resumen();
  }

  function aplicar(datos, completo) {
    estado.disponibles = datos.disponibles;
    estado.retenidas = datos.retenidas;
    cifraDisp.textContent = String(datos.disponibles);
    cifraRet.textContent = String(datos.retenidas);
    const cambiados = [];
    if (completo && datos.secciones) {
      for (const s of datos.secciones) {
        for (let i = 0; i < s.estados.length; i++) { estado.asientos.set(`${s.nombre}-${i + 1}`, s.estados[i]); cambiados.push(`${s.nombre}-${i + 1}`); }
      }
    } else if (datos.asientos) {
      // {"<seat id>": "L|R|V"}: only the seats that changed
      for (const [id, e] of Object.entries(datos.asientos)) { estado.asientos.set(id, e); cambiados.push(id); }
    }
    for (const id of cambiados) {
      if (!estado.comprando && estado.elegidos.has(id) && estado.asientos.get(id) !== "L") {
        estado.elegidos.delete(id);
        elegidosTexto.textContent = `El asiento ${id} ya no está libre.`;
      }
      pintarAsiento(id);
    }
    resumen();
  }

  const fuente = new EventSource(`/api/disponibilidad/${encodeURIComponent(eventoId)}/en-vivo`);
  fuente.addEventListener("estado", (e) => { aplicar(JSON.parse(e.data), true); vivo.textContent = "● en vivo"; });
  fuente.addEventListener("cambio", (e) => aplicar(JSON.parse(e.data), false));
  fuente.addEventListener("error", () => { vivo.textContent = "reconectando…"; });

  // -- checkout ---------------------------------------------------------------------------------------
  const cantidad = h("input", { id: "cantidad", name: "cantidad", type: "number", min: 1, max: maximo, value: 1, required: true });
  const total = h("p", { id: "total" });
  function seleccion() {
    if (dibujarMapa) return { cantidad: estado.elegidos.size, asientos: [...estado.elegidos].sort() };
    return { cantidad: Number(cantidad.value) || 0, asientos: [] };
  }
  function resumen() {
    const s = seleccion();
    if (dibujarMapa) elegidosTexto.textContent = s.cantidad ? `Elegiste: ${s.asientos.join(", ")}` : `Elegí hasta ${maximo} asientos en el mapa.`;
    const precio = evento.precio_centimos;
    total.textContent = s.cantidad ? `Total: ${dinero(s.cantidad * (precio + cargoPorEntrada(precio)))} (${s.cantidad} × ${dinero(precio)} + cargo por servicio)` : "";
  }
  cantidad.addEventListener("input", resumen);

  const salida = h("div", { id: "resultado", "aria-live": "assertive" });
  const comprar = h("button", { type: "submit", id: "comprar" }, "Comprar");
  const tarjetasPrueba = config.tarjetas_de_prueba ? h("details", { class: "tarjetas-prueba", open: true },
    h("summary", {}, "Tarjetas de prueba (entorno local: ningún cobro es real)"),
    h("ul", {}, TARJETAS.map(([num, que]) => h("li", {}, h("code", {}, num), ` ${que} `,
      h("button", { type: "button", class: "secundario", "aria-label": `Usar la tarjeta ${num}`, onclick: () => usarTarjeta(num) }, "usar")))),
    h("p", { class: "ayuda" }, "Cualquier vencimiento futuro (MM/AA) y cualquier CVC de 3 dígitos.")) : null;
  const numero = h("input", { id: "numero", name: "numero", inputmode: "numeric", autocomplete: "cc-number", required: true, placeholder: "4242 4242 4242 4242" });
  const vence = h("input", { id: "vencimiento", name: "vencimiento", autocomplete: "cc-exp", required: true, placeholder: "MM/AA", pattern: "\\d{2}/\\d{2}" });
  const cvc = h("input", { id: "cvc", name: "cvc", inputmode: "numeric", autocomplete: "cc-csc", required: true, placeholder: "123", pattern: "\\d{3,4}" });
  function usarTarjeta(num) { numero.value = num; if (!vence.value) vence.value = "12/34"; if (!cvc.value) cvc.value = "123"; numero.focus(); }

  const form = h("form", { "aria-label": "Comprar entradas", id: "checkout" },
    dibujarMapa ? elegidosTexto : h("label", { for: "cantidad" }, numerado ? "Cantidad (asientos asignados automáticamente)" : "Cantidad", cantidad),
    h("fieldset", {}, h("legend", {}, "Pago con tarjeta"),
      h("label", { for: "numero" }, "Número de tarjeta", numero),
      h("div", { class: "fila" }, h("label", { for: "vencimiento" }, "Vencimiento", vence), h("label", { for: "cvc" }, "Código de seguridad", cvc))),
    tarjetasPrueba, total, comprar, salida);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (estado.comprando) return; // a second click while the first is in flight does nothing
    const s = seleccion();
    if (!s.cantidad) { salida.replaceChildren(h("p", { class: "error" }, "Elegí al menos una entrada.")); return; }
    estado.comprando = true;
    comprar.disabled = true;
    const clave = clavePara(eventoId, JSON.stringify(s));
    salida.replaceChildren(h("div", { class: "resultado espera", role: "status" }, h("h2", {}, "Procesando tu compra…"), h("p", {}, "Estamos reservando tus entradas y autorizando el pago.")));
    const cuerpo = { evento_id: eventoId, cantidad: s.cantidad, pago: { numero_tarjeta: numero.value.replace(/\s+/g, ""), vencimiento: vence.value.trim(), cvc: cvc.value.trim() } };
    if (s.asientos.length) cuerpo.asientos = s.asientos;
    try {
      let reserva = await api("/api/reservar", { method: "POST", json: cuerpo, headers: { "Idempotency-Key": clave } });
      while (reserva.en_curso) { // 202: the outcome is on its way
        await new Promise((r) => setTimeout(r, 500));
        reserva = await api(`/api/reservas/${reserva.id}`);
      }
      mostrarResultado(reserva);
      olvidarClave(eventoId);
    } catch (err) {
      if (err instanceof ApiError) {
        olvidarClave(eventoId); // refused before anything was made: the same key would be free anyway
        salida.replaceChildren(h("div", { class: "resultado mal", role: "alert" }, h("h2", {}, "No se pudo comprar"), h("p", {}, motivo(err.motivo, err.problem))));
      } else {
        salida.replaceChildren(h("div", { class: "resultado espera", role: "alert" }, h("h2", {}, "Sin respuesta"),
          h("p", {}, "No sabemos si tu compra llegó. Volvé a tocar Comprar: no se te cobrará dos veces.")));
      }
    } finally {
      estado.comprando = false;
      comprar.disabled = false;
    }
  });

  function mostrarResultado(reserva) {
    estado.elegidos.clear();
    for (const id of botones.keys()) pintarAsiento(id);
    resumen();
    if (reserva.estado === "confirmada") {
      const recientes = JSON.parse(sessionStorage.getItem("eventflow.recientes") || "[]");
      sessionStorage.setItem("eventflow.recientes", JSON.stringify([reserva.id, ...recientes.filter((r) => r !== reserva.id)].slice(0, 20)));
      salida.replaceChildren(h("div", { class: "resultado ok", role: "status", id: "confirmada" },
        h("h2", {}, "¡Compra confirmada!"),
        h("p", {}, `${reserva.entradas.cantidad} ${reserva.entradas.cantidad === 1 ? "entrada" : "entradas"} · ${dinero(reserva.importe_centimos)} · ${reserva.pago.marca || ""} terminada en ${reserva.pago.ultimos4 || ""}`),
        reserva.entradas.asientos.length ? h("p", {}, `Asientos: ${reserva.entradas.asientos.join(", ")}`) : null,
        h("a", { class: "boton", href: "#/mis-entradas" }, "Ver mis entradas")));
    } else {
      salida.replaceChildren(h("div", { class: "resultado mal", role: "alert", id: "rechazada" },
        h("h2", {}, "Compra rechazada"), h("p", {}, motivo(reserva.motivo)), h("p", {}, "Las entradas volvieron a estar disponibles.")));
    }
  }

  const checkout = h("section", { class: "panel", "aria-labelledby": "t-compra" }, h("h2", { id: "t-compra" }, "Comprar"));
  function pintarCheckout() {
    if (pasado) { checkout.replaceChildren(h("h2", { id: "t-compra" }, "Comprar"), h("p", {}, "Este evento ya pasó.")); return; }
    if (!sesion()) {
      checkout.replaceChildren(h("h2", { id: "t-compra" }, "Comprar"), h("p", {}, "Entrá o creá tu cuenta para comprar."), formularios(pintarCheckout, "checkout"));
      return;
    }
    checkout.replaceChildren(h("h2", { id: "t-compra" }, "Comprar"), form);
    const pendiente = compraPendiente(eventoId);
    if (pendiente) salida.replaceChildren(h("p", { class: "ayuda" }, "Tenés una compra sin resultado para este evento: con la misma selección, Comprar la retoma sin cobrarte dos veces."));
    resumen();
  }
  pintarCheckout();

  pintar(h("div", { class: "evento" },
    h("div", {},
      h("h1", {}, evento.nombre),
      h("p", {}, h("strong", {}, fecha(evento.fecha, true)), ` · ${evento.lugar}`),
      h("p", {}, evento.precio_centimos ? `${dinero(evento.precio_centimos)} por entrada` : "Gratis", " ", quedan(evento.entradas_disponibles)),
      evento.descripcion ? h("p", {}, evento.descripcion) : null,
      evento.venta_desde && new Date(evento.venta_desde) > new Date() ? h("p", { class: "etiqueta espera" }, `La venta empieza el ${fecha(evento.venta_desde)}`) : null,
      h("p", { class: "ayuda" }, `Hasta ${evento.limite_por_usuario} entradas por persona.`),
      cifras, dibujarMapa ? mapa : null),
    checkout));
  for (const id of botones.keys()) pintarAsiento(id);
  return () => fuente.close();
}
