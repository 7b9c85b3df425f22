// Sign in and register: a page of its own (#/entrar) and the same forms inline in the checkout.
import { ApiError, api, entrar, sesion } from "./api.js";
import { h, parametros, pintar, titulo } from "./ui.js";

const DOCUMENTOS = [["DNI", "DNI"], ["Pasaporte", "Pasaporte"], ["CUIT", "CUIT/CUIL"], ["Cedula", "Cédula (UY)"],
  ["NIF", "NIF (ES)"], ["NIE", "NIE (ES)"]];

function campo(etiqueta, atributos, ayuda) {
  return h("label", {}, etiqueta, h("input", atributos), ayuda ? h("small", {}, ayuda) : null);
}

function errores(err) {
  if (err instanceof ApiError && err.problem.errors) {
    return h("ul", { class: "error" }, err.problem.errors.map((e) => h("li", {}, `${e.field}: ${e.message}`)));
  }
  if (err instanceof ApiError && err.status === 401) return h("p", { class: "error" }, "Email o contraseña incorrectos.");
  if (err instanceof ApiError && err.status === 429) return h("p", { class: "error" }, "Demasiados intentos: esperá un momento.");
  return h("p", { class: "error" }, err.message || String(err));
}

// The two forms side by side; `listo()` runs once signed in.
export function formularios(listo, prefijo = "c") {
  const salidaEntrar = h("div", { "aria-live": "polite" });
  const fEntrar = h("form", { "aria-labelledby": `${prefijo}-t-entrar` },
    h("h2", { id: `${prefijo}-t-entrar` }, "Entrar"),
    campo("Email", { name: "email", type: "email", required: true, autocomplete: "email", id: `${prefijo}-email` }),
    campo("Contraseña", { name: "password", type: "password", required: true, autocomplete: "current-password", id: `${prefijo}-password` }),
    h("button", { type: "submit" }, "Entrar"), salidaEntrar);
  fEntrar.addEventListener("submit", async (e) => {
    e.preventDefault();
    const boton = fEntrar.querySelector("button");
    boton.disabled = true;
    salidaEntrar.replaceChildren();
    try {
      const d = new FormData(fEntrar);
      await entrar(String(d.get("email")), String(d.get("password")));
      listo();
    } catch (err) { salidaEntrar.replaceChildren(errores(err)); } finally { boton.disabled = false; }
  });

  const salidaAlta = h("div", { "aria-live": "polite" });
  const fAlta = h("form", { "aria-labelledby": `${prefijo}-t-alta` },
    h("h2", { id: `${prefijo}-t-alta` }, "Crear cuenta"),
    h("div", { class: "fila" },
      campo("Nombre", { name: "nombre", required: true, autocomplete: "given-name" }),
      campo("Apellido", { name: "apellido", required: true, autocomplete: "family-name" })),
    h("div", { class: "fila" },
      h("label", {}, "Tipo de documento", h("select", { name: "tipo_documento" }, DOCUMENTOS.map(([v, t]) => h("option", { value: v }, t)))),
      campo("Número de documento", { name: "nro_documento", required: true, inputmode: "text" })),
    campo("Email", { name: "email", type: "email", required: true, autocomplete: "email" }),
    campo("Contraseña", { name: "password", type: "password", required: true, minlength: 10, autocomplete: "new-password" },
      "Al menos 10 caracteres; que no sea una muy común ni contenga tu nombre."),
    h("button", { type: "submit" }, "Crear cuenta y entrar"), salidaAlta);
  const claveAlta = crypto.randomUUID(); // a double submit registers once
  fAlta.addEventListener("submit", async (e) => {
    e.preventDefault();
    const boton = fAlta.querySelector("button");
    boton.disabled = true;
    salidaAlta.replaceChildren();
    const d = Object.fromEntries(new FormData(fAlta));
    try {
      await api("/api/usuarios", { method: "POST", json: d, headers: { "Idempotency-Key": claveAlta } });
      await entrar(d.email, d.password);
      listo();
    } catch (err) { salidaAlta.replaceChildren(errores(err)); } finally { boton.disabled = false; }
  });
  return h("div", { class: "fila arriba" }, h("div", { class: "panel" }, fEntrar), h("div", { class: "panel" }, fAlta));
}

export async function mostrar() {
  titulo("Entrar");
  const volver = parametros().get("volver") || "#/";
  if (sesion()) { location.hash = volver; return; }
  pintar(h("h1", {}, "Entrá o creá tu cuenta"), formularios(() => { location.hash = volver; }, "pagina"));
}
