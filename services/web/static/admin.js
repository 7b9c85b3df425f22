// Admin: look a user up, change their roles, and download the anonymized export.
import { api, blob, sesion, tieneRol } from "./api.js";
import { h, motivo, pintar, titulo } from "./ui.js";

const ROLES = ["comprador", "organizador", "control", "admin"];

export async function mostrar() {
  titulo("Administración");
  if (!sesion()) { location.hash = "#/entrar?volver=%23%2Fadmin"; return; }
  if (!tieneRol("admin")) { pintar(h("h1", {}, "Administración"), h("p", { class: "error" }, "Solo para administradores.")); return; }
  const ficha = h("div", { "aria-live": "polite", id: "ficha" });
  const buscar = h("form", { "aria-labelledby": "t-usuario" },
    h("h2", { id: "t-usuario" }, "Usuarios y roles"),
    h("label", {}, "Id del usuario", h("input", { name: "id", required: true })),
    h("button", { type: "submit" }, "Buscar"));
  buscar.addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = String(new FormData(buscar).get("id")).trim();
    try { ficha.replaceChildren(usuario(await api(`/api/usuarios/${encodeURIComponent(id)}`))); } catch (err) { ficha.replaceChildren(h("p", { class: "error" }, err.status === 404 ? "No existe ese usuario." : motivo(err.motivo, err.problem))); }
  });
  const salidaExport = h("div", { "aria-live": "polite" });
  const exportar = h("button", { type: "button", id: "exportar", onclick: async () => {
    try {
      const url = await blob("/api/usuarios/exportar");
      const a = h("a", { href: url, download: "usuarios-anonimizados.json" }); document.body.append(a); a.click(); a.remove();
    } catch (err) { salidaExport.replaceChildren(h("p", { class: "error" }, `No se pudo exportar: ${err.message}`)); }
  } }, "Descargar la exportación anonimizada");
  pintar(h("h1", {}, "Administración"), h("div", { class: "fila arriba" },
    h("section", { class: "panel" }, buscar, ficha),
    h("section", { class: "panel", "aria-labelledby": "t-export" }, h("h2", { id: "t-export" }, "Exportación"),
      h("p", {}, "Usuarios sin datos personales (documento, email y nombre seudonimizados)."), exportar, salidaExport)));
}

function usuario(u) {
  const salida = h("div", { "aria-live": "polite" });
  const casillas = ROLES.map((r) => h("label", { class: "casilla" }, h("input", { type: "checkbox", name: "roles", value: r, checked: (u.roles || []).includes(r), disabled: r === "comprador" }), r));
  const form = h("form", { "aria-label": `Roles de ${u.nombre || u.id}` },
    h("p", {}, h("strong", {}, `${u.nombre || ""} ${u.apellido || ""}`), ` · ${u.email || ""} · ${u.id}`),
    h("fieldset", {}, h("legend", {}, "Roles"), casillas),
    h("button", { type: "submit" }, "Guardar roles"), salida);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const roles = [...form.querySelectorAll("input[name=roles]:checked")].map((c) => c.value).filter((r) => r !== "comprador");
    try {
      await api(`/api/usuarios/${encodeURIComponent(u.id)}/roles`, { method: "PUT", json: { roles } });
      salida.replaceChildren(h("p", { class: "resultado ok", role: "status" }, "Roles guardados. Valen desde su próximo inicio de sesión."));
    } catch (err) { salida.replaceChildren(h("p", { class: "error" }, motivo(err.motivo, err.problem))); }
  });
  return form;
}
