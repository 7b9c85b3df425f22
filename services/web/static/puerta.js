// Door (control): type or camera-scan a ticket code; a full-screen green or red answer.
//
// Offline: a scan made while the network is down is queued in localStorage (with the time it was made) and
// sent, in order, when the browser is back online; each queued scan then shows the server's own answer, so a
// ticket scanned twice during the drop is still green once and red once. The server decides (a create-if-absent
// claim), never this page.
import { ApiError, api, sesion, tieneRol } from "./api.js";
import { fecha, h, pintar, soloHora, titulo } from "./ui.js";

const COLA = "eventflow.puerta.cola";
const JSQR = "/static/vendor/jsQR-1.4.0.js";

function cola() { try { return JSON.parse(localStorage.getItem(COLA)) || []; } catch { return []; } }
function guardarCola(c) { localStorage.setItem(COLA, JSON.stringify(c)); }

export async function mostrar() {
  titulo("Puerta");
  if (!sesion()) { location.hash = "#/entrar?volver=%23%2Fpuerta"; return; }
  if (!tieneRol("control", "organizador", "admin")) { pintar(h("h1", {}, "Puerta"), h("p", { class: "error" }, "Esta página es para el personal de acceso.")); return; }

  // `#/puerta?evento=<id>`: this door admits to one event, and a ticket of another is refused (not used up).
  const puertaDe = new URLSearchParams(location.hash.split("?")[1] || "").get("evento");
  const respuesta = h("div", { class: "respuesta", id: "respuesta", role: "alert", hidden: true, tabindex: "-1" });
  const estadoRed = h("p", { class: "ayuda", id: "red", "aria-live": "polite" });
  const codigo = h("input", { id: "codigo", name: "codigo", autocomplete: "off", required: true, autocapitalize: "off", spellcheck: "false" });
  const form = h("form", { id: "escanear", "aria-label": "Validar entrada" },
    h("label", { for: "codigo" }, "Código de la entrada", codigo),
    h("button", { type: "submit" }, "Validar"));
  const video = h("video", { class: "camara", playsinline: true, muted: true, hidden: true });
  const botonCamara = h("button", { type: "button", class: "secundario", id: "camara" }, "Escanear con la cámara");
  pintar(h("div", { class: "puerta" }, h("h1", {}, "Control de acceso"), form, botonCamara, video, estadoRed, respuesta));

  function red() {
    const n = cola().length;
    estadoRed.textContent = (navigator.onLine ? "En línea" : "Sin conexión: los escaneos se guardan y se envían al volver") + (n ? ` · ${n} en cola` : "");
  }

  let ocultar = null;
  function mostrarRespuesta(clase, tituloTexto, detalle) {
    respuesta.className = `respuesta ${clase}`;
    respuesta.replaceChildren(h("p", { class: "grande" }, tituloTexto), ...detalle.filter(Boolean).map((d) => h("p", {}, d)),
      h("button", { type: "button", class: "secundario", onclick: cerrar }, "Siguiente"));
    respuesta.hidden = false;
    respuesta.focus();
    clearTimeout(ocultar);
    ocultar = setTimeout(cerrar, 4000);
  }
  function cerrar() { respuesta.hidden = true; codigo.focus(); }

  function resultado(r, cuando) {
    const enCola = cuando ? `Escaneada sin conexión a las ${soloHora(cuando)}` : null;
    if (r.ok) {
      mostrarRespuesta("valida", "VÁLIDA", [r.datos.ticket.asiento ? `Asiento ${r.datos.ticket.asiento}` : "Entrada general", r.datos.evento && r.datos.evento.nombre, enCola]);
    } else if (r.motivo === "ya_usado") {
      mostrarRespuesta("invalida", "YA USADA", [r.problema.primera_entrada_en ? `Primera entrada: ${fecha(r.problema.primera_entrada_en)}` : null, enCola]);
    } else if (r.motivo === "cancelada") {
      mostrarRespuesta("invalida", "CANCELADA", ["La reserva de esta entrada fue cancelada.", enCola]);
    } else if (r.motivo === "otro_evento") {
      mostrarRespuesta("invalida", "OTRO EVENTO", ["Esta entrada es de otro evento: no se usó.", enCola]);
    } else if (r.status === 403) {
      mostrarRespuesta("invalida", "NO AUTORIZADO", ["No podés validar entradas de este evento.", enCola]);
    } else {
      mostrarRespuesta("invalida", "INVÁLIDA", ["El código no es una entrada válida.", enCola]);
    }
  }

  // Each scan has its own id, sent as the Idempotency-Key and kept with it in the queue: a scan resent after its
  // answer was lost (the network dropped mid-request) gets "VÁLIDA" again, not "YA USADA" for its own entry.
  async function enviar(texto, escaneo) {
    try {
      const json = puertaDe ? { codigo: texto, evento_id: puertaDe } : { codigo: texto };
      const datos = await api("/api/checkin", { method: "POST", json, headers: { "Idempotency-Key": escaneo } });
      return { ok: true, datos };
    } catch (err) {
      if (err instanceof ApiError && err.status < 500) return { ok: false, status: err.status, motivo: err.motivo, problema: err.problem };
      throw err; // network down or server unavailable: queue it
    }
  }

  async function validar(texto) {
    texto = texto.trim();
    if (!texto) return;
    const escaneo = crypto.randomUUID();
    if (!navigator.onLine || cola().length) { encolar(texto, escaneo); return; }
    try { resultado(await enviar(texto, escaneo)); } catch { encolar(texto, escaneo); }
  }
  function encolar(texto, escaneo) {
    guardarCola([...cola(), { codigo: texto, escaneo, cuando: new Date().toISOString() }]);
    red();
    mostrarRespuesta("espera", "EN COLA", ["Sin conexión: se validará al volver la red. No dejes pasar todavía si dudás."]);
    reintentar();
  }
  // The browser's `online` event is not enough: the Wi-Fi may stay up while the server is unreachable, or one
  // answer may be a 503. While scans are queued and this page is shown, try again every few seconds.
  function reintentar() {
    setTimeout(() => { if (document.body.contains(form) && cola().length) vaciar(); }, 4000);
  }
  let vaciando = false;
  async function vaciar() {
    if (vaciando || !navigator.onLine) return;
    vaciando = true;
    try {
      while (cola().length) {
        const [primero] = cola();
        if (!primero.escaneo) { // queued by an older page: give it its key once, kept for every retry
          primero.escaneo = crypto.randomUUID();
          guardarCola([primero, ...cola().slice(1)]);
        }
        let r;
        try { r = await enviar(primero.codigo, primero.escaneo); } catch { reintentar(); break; }
        guardarCola(cola().slice(1));
        red();
        resultado(r, primero.cuando);
        await new Promise((ok) => setTimeout(ok, 1200)); // each queued answer stays readable
      }
    } finally { vaciando = false; red(); }
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); const t = codigo.value; codigo.value = ""; validar(t); });

  let flujo = null;
  let detener = false;
  botonCamara.addEventListener("click", async () => {
    if (flujo) { apagar(); return; }
    try {
      flujo = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    } catch { estadoRed.textContent = "No se pudo usar la cámara: escribí el código."; return; }
    video.srcObject = flujo; video.hidden = false; await video.play();
    botonCamara.textContent = "Apagar la cámara";
    detener = false;
    const leer = await lector();
    let ultimo = ""; let ultimoEn = 0;
    const paso = async () => {
      if (detener) return;
      const texto = await leer(video).catch(() => null);
      if (texto && (texto !== ultimo || Date.now() - ultimoEn > 5000)) { ultimo = texto; ultimoEn = Date.now(); validar(texto); }
      setTimeout(paso, 250);
    };
    paso();
  });
  function apagar() {
    detener = true;
    if (flujo) flujo.getTracks().forEach((t) => t.stop());
    flujo = null; video.hidden = true; botonCamara.textContent = "Escanear con la cámara";
  }

  const alVolver = () => { red(); vaciar(); };
  window.addEventListener("online", alVolver);
  window.addEventListener("offline", red);
  red();
  vaciar();
  codigo.focus();
  return () => { apagar(); window.removeEventListener("online", alVolver); window.removeEventListener("offline", red); };
}

// BarcodeDetector where the browser has it; the vendored jsQR otherwise.
async function lector() {
  if ("BarcodeDetector" in window) {
    const d = new window.BarcodeDetector({ formats: ["qr_code"] });
    return async (video) => { const [c] = await d.detect(video); return c ? c.rawValue : null; };
  }
  if (!window.jsQR) {
    await new Promise((ok, mal) => { const s = document.createElement("script"); s.src = JSQR; s.onload = ok; s.onerror = mal; document.head.append(s); });
  }
  const lienzo = document.createElement("canvas");
  const ctx = lienzo.getContext("2d", { willReadFrequently: true });
  return async (video) => {
    if (!video.videoWidth) return null;
    lienzo.width = video.videoWidth; lienzo.height = video.videoHeight;
    ctx.drawImage(video, 0, 0);
    const img = ctx.getImageData(0, 0, lienzo.width, lienzo.height);
    const r = window.jsQR(img.data, img.width, img.height);
    return r ? r.data : null;
  };
}
