// Catalog: upcoming events, search by name, filter by category and dates, paging.
import { api } from "./api.js";
import { dinero, fecha, h, parametros, pintar, quedan, titulo } from "./ui.js";

const POR_PAGINA = 12;

function desdeLocal(valor, finDelDia) {
  if (!valor) return null;
  const d = new Date(`${valor}T${finDelDia ? "23:59:59" : "00:00:00"}`);
  return d.toISOString();
}

export async function mostrar() {
  titulo("Catálogo");
  const p = parametros();
  const form = h("form", { class: "filtros", role: "search", "aria-label": "Buscar eventos" },
    h("label", {}, "Buscar por nombre", h("input", { name: "q", type: "search", value: p.get("q") || "", placeholder: "p. ej. rock" })),
    h("label", {}, "Categoría", h("input", { name: "categoria", value: p.get("categoria") || "", placeholder: "musica, teatro…" })),
    h("label", {}, "Desde", h("input", { name: "desde", type: "date", value: p.get("desde") || "" })),
    h("label", {}, "Hasta", h("input", { name: "hasta", type: "date", value: p.get("hasta") || "" })),
    h("button", { type: "submit" }, "Buscar"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const datos = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) datos.set(k, v);
    location.hash = `#/?${datos}`;
  });
  const lista = h("div", { "aria-live": "polite" }, h("p", {}, "Buscando…"));
  pintar(h("h1", {}, "Próximos eventos"), form, lista);

  const pagina = Math.max(0, Number(p.get("pagina") || 0));
  const consulta = new URLSearchParams({ limit: String(POR_PAGINA), offset: String(pagina * POR_PAGINA) });
  if (p.get("q")) consulta.set("q", p.get("q"));
  if (p.get("categoria")) consulta.set("categoria", p.get("categoria"));
  consulta.set("desde", desdeLocal(p.get("desde"), false) || new Date().toISOString());
  const hasta = desdeLocal(p.get("hasta"), true);
  if (hasta) consulta.set("hasta", hasta);
  let resultado;
  try {
    resultado = await api(`/api/eventos?${consulta}`);
  } catch (err) {
    lista.replaceChildren(h("p", { class: "error" }, `No se pudo buscar: ${err.message}`));
    return;
  }
  if (!resultado.items.length) {
    lista.replaceChildren(h("p", {}, "No hay eventos que coincidan."));
    return;
  }
  const tarjetas = h("ul", { class: "tarjetas" }, resultado.items.map((e) => h("li", { class: "tarjeta" },
    h("h2", {}, h("a", { href: `#/evento/${encodeURIComponent(e.id)}` }, e.nombre)),
    h("div", { class: "meta" }, fecha(e.fecha)),
    h("div", { class: "meta" }, `${e.lugar} · ${e.categoria}`),
    h("div", {}, h("strong", {}, e.precio_centimos ? dinero(e.precio_centimos) : "Gratis"), " ", quedan(e.entradas_disponibles)),
  )));
  const navegar = (n) => { const q = new URLSearchParams(p); q.set("pagina", String(n)); location.hash = `#/?${q}`; };
  const paginas = h("nav", { class: "paginas", "aria-label": "Páginas" },
    pagina > 0 ? h("button", { type: "button", class: "secundario", onclick: () => navegar(pagina - 1) }, "← Anteriores") : null,
    h("span", {}, `Página ${pagina + 1} de ${Math.max(1, Math.ceil(resultado.total / POR_PAGINA))}`),
    resultado.next_offset !== null ? h("button", { type: "button", class: "secundario", onclick: () => navegar(pagina + 1) }, "Siguientes →") : null,
  );
  lista.replaceChildren(h("p", { class: "ayuda" }, `${resultado.total} eventos`), tarjetas, paginas);
}
