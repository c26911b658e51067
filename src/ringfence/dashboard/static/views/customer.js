// A customer: current feature values, alerts, and recent (masked) events.
import { api } from "../api.js";
import { h, field, table, time, badge, number, errorBox, section, flatten, featureValue } from "../ui.js";

function searchForm(current) {
  const input = h("input", { name: "customer_id", value: current || "", required: true, maxlength: 128, placeholder: "e.g. cus_00042" });
  const form = h("form", { class: "inline", role: "search", "aria-label": "Find a customer" }, field("Customer id", input), h("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.assign(`/customers/${encodeURIComponent(input.value.trim())}`);
  });
  return form;
}

async function part(title, load) {
  try {
    return section(title, await load());
  } catch (error) {
    return section(title, errorBox(error));
  }
}

export async function render(main, { param }) {
  document.title = param ? `${param} · Ringfence` : "Customers · Ringfence";
  if (!param) {
    main.replaceChildren(h("h1", {}, "Customers"), searchForm(""));
    return;
  }
  const id = encodeURIComponent(param);
  main.replaceChildren(h("h1", {}, "Customer ", h("code", {}, param)), searchForm(param), h("p", { class: "muted" }, "Loading…"));
  const sections = await Promise.all([
    part("Current features", async () => {
      const body = await api(`/v1/customers/${id}/features`);
      const entries = Object.entries(body.features);
      return [h("p", { class: "muted small" }, "as of event time ", time(body.at)),
        table("Features", ["Feature", "Value"], entries.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", { class: "num" }, featureValue(v)))), "No feature state for this customer.")];
    }),
    part("Alerts", async () => {
      const body = await api(`/v1/alerts?customer_id=${id}&limit=50`);
      return table("Alerts", ["Last seen", "Severity", "Title", "Status"], body.items.map((a) => h("tr", {},
        h("td", {}, time(a.last_seen)), h("td", {}, badge("severity", a.severity)),
        h("td", {}, h("a", { href: `/alerts/${encodeURIComponent(a.id)}` }, a.title)), h("td", {}, badge("status", a.status)))), "No alerts for this customer.");
    }),
    part("Recent events", async () => {
      const body = await api(`/v1/customers/${id}/events?limit=50`);
      return [table("Recent events", ["Occurred", "Type", "Event id", "Details"], body.items.map((item) => h("tr", {},
        h("td", {}, time(new Date(item.event.occurred_at * 1000).toISOString())),
        h("td", {}, item.event.type),
        h("td", {}, h("code", {}, item.event.event_id)),
        h("td", { class: "small" }, flatten(item.event.data).map(([k, v]) => `${k}=${v}`).join(" · ")))), "No events of this customer in the recent log."),
      h("p", { class: "muted small" }, `Searched the log from offset ${number(body.searched_from_offset)}.`)];
    }),
  ]);
  main.replaceChildren(h("h1", {}, "Customer ", h("code", {}, param)), searchForm(param), h("div", { class: "two-col" }, sections[0], sections[1]), sections[2]);
}
