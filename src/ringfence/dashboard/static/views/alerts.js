// Alerts: a live list with filters and counts by severity; new alerts arrive over SSE.
import { api } from "../api.js";
import { h, field, select, table, time, badge, number, errorBox } from "../ui.js";

const SEVERITIES = ["critical", "high", "medium", "low", "info"];
const STATUSES = ["open", "acknowledged", "resolved", "suppressed"];
const AUDIENCES = ["fraud", "aml", "security", "ops", "customer"];
const PERIODS = [["", "Any time"], ["15m", "Last 15 minutes"], ["1h", "Last hour"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"]];
const PERIOD_S = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 };

function query(form, cursor) {
  const params = new URLSearchParams();
  for (const name of ["status", "severity", "audience", "rule_id", "customer_id"]) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  const period = form.elements.period.value;
  if (period) params.set("since", new Date(Date.now() - PERIOD_S[period] * 1000).toISOString());
  if (cursor) params.set("cursor", cursor);
  return params;
}

function row(alert, fresh) {
  return h("tr", { class: fresh ? "fresh" : null, "data-alert-id": alert.id },
    h("td", {}, time(alert.last_seen)),
    h("td", {}, badge("severity", alert.severity)),
    h("td", {}, h("a", { href: `/alerts/${encodeURIComponent(alert.id)}` }, alert.title)),
    h("td", {}, alert.rule_id),
    h("td", {}, alert.customer_id ? h("a", { href: `/customers/${encodeURIComponent(alert.customer_id)}` }, alert.customer_id) : "—"),
    h("td", {}, badge("status", alert.status)),
    h("td", { class: "num" }, number(alert.count)));
}

export async function render(main) {
  document.title = "Alerts · Ringfence";
  const initial = new URLSearchParams(location.search);
  const form = h("form", { class: "filters", "aria-label": "Alert filters" },
    field("Status", select("status", [["", "Any"], ...STATUSES.map((s) => [s, s])], initial.get("status") || "")),
    field("Severity", select("severity", [["", "Any"], ...SEVERITIES.map((s) => [s, s])], initial.get("severity") || "")),
    field("Audience", select("audience", [["", "Any"], ...AUDIENCES.map((s) => [s, s])], initial.get("audience") || "")),
    field("Rule", h("input", { name: "rule_id", value: initial.get("rule_id") || "", placeholder: "rule id" })),
    field("Customer", h("input", { name: "customer_id", value: initial.get("customer_id") || "", placeholder: "customer id" })),
    field("Time", select("period", PERIODS, initial.get("period") || "")),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Apply"), h("button", { type: "reset", class: "secondary" }, "Clear")));
  const counts = h("ul", { class: "counts", "aria-label": "Alerts by severity" });
  const live = h("span", { class: "live", id: "live", role: "status" }, "connecting…");
  const list = h("div", { id: "alert-list" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  main.replaceChildren(h("div", { class: "title-row" }, h("h1", {}, "Alerts"), live), form, counts, list, more);

  const seen = new Set();
  let nextCursor = null;
  let rows = [];

  let latest = 0;
  async function load(append = false) {
    const params = query(form, append ? nextCursor : null);
    const mine = ++latest;
    more.disabled = true; // a page added to a list being reloaded would be added to the wrong list
    try {
      const countParams = new URLSearchParams(params);
      countParams.delete("cursor");
      // the list and its counts are fetched together and shown together, so they never disagree on screen
      const [page, total] = await Promise.all([api(`/v1/alerts?${params}&limit=50`), api(`/v1/alerts/counts?${countParams}`)]);
      if (mine !== latest) return; // a newer load is on its way; an older answer must not overwrite it
      const fresh = page.items.filter((a) => seen.size && !seen.has(a.id));
      page.items.forEach((a) => seen.add(a.id));
      const freshIds = new Set(fresh.map((a) => a.id));
      rows = (append ? rows : []).concat(page.items.map((a) => row(a, freshIds.has(a.id))));
      nextCursor = page.next_cursor;
      more.hidden = !nextCursor;
      list.replaceChildren(table("Alerts", ["Last seen", "Severity", "Title", "Rule", "Customer", "Status", "Count"], rows, "No alerts match these filters."));
      counts.replaceChildren(
        h("li", {}, "Total ", h("strong", {}, number(total.total))),
        ...SEVERITIES.map((s) => h("li", { class: `severity-${s}` }, `${s} `, h("strong", { "data-severity": s }, number(total.by_severity[s] || 0)))));
    } catch (error) {
      if (mine === latest) list.replaceChildren(errorBox(error));
    } finally {
      if (mine === latest) more.disabled = false;
    }
  }

  function saveFilters() {
    const params = new URLSearchParams();
    for (const name of ["status", "severity", "audience", "rule_id", "customer_id", "period"]) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    history.replaceState(null, "", params.size ? `/?${params}` : "/");
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); saveFilters(); load(); });
  form.addEventListener("reset", () => setTimeout(() => { saveFilters(); load(); }, 0));
  more.addEventListener("click", () => load(true));
  await load();

  // live: any alert change reloads the first page (debounced); new rows are highlighted
  let pending = null;
  const stream = new EventSource("/v1/alerts/stream");
  stream.addEventListener("open", () => { live.textContent = "● live"; live.classList.add("on"); });
  stream.addEventListener("error", () => { live.textContent = "reconnecting…"; live.classList.remove("on"); });
  stream.addEventListener("alert", () => {
    clearTimeout(pending);
    pending = setTimeout(() => load(), 300);
  });
  addEventListener("pagehide", () => stream.close());
}
