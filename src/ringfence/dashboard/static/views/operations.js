// Operations: throughput, lag (also per partition), late, rejected and quarantined events, alerts
// and notification health, charted from /v1/stats and refreshed every few seconds. An admin also
// sees the latest quarantined events (/v1/quarantine) and can re-drive them after a pack fix.
import { api, session } from "../api.js";
import { h, number, time, errorBox, section, table, lineChart, barChart, announce } from "../ui.js";

function tile(label, value, id) {
  return h("div", { class: "tile" }, h("span", { class: "tile-label" }, label), h("strong", { id }, value));
}

// the FX rates ingest converts amounts with: a stale rate or a currency with none is an
// operations problem (amounts compared at an old rate, or not compared at all)
function fxSection(fx) {
  return section("Money", h("dl", { class: "facts", id: "fx-facts" },
    h("dt", {}, "Reference currency"), h("dd", {}, fx.reference),
    h("dt", {}, "Rate table version"), h("dd", {}, fx.version ? number(fx.version) : "none loaded"),
    h("dt", {}, "Rates"), h("dd", {}, number(fx.rates)),
    h("dt", {}, `Stale (older than ${fx.max_age_days} days)`), h("dd", { id: "fx-stale" }, number(fx.stale)),
    h("dt", {}, "Events with no rate, since start"), h("dd", { id: "fx-missing" }, number(fx.missing_rate_events))));
}

function quarantineSection(stats, entries, onRedrive) {
  const q = stats.quarantine || {};
  const facts = h("p", { id: "quarantine-counts" },
    `${number(q.quarantined || 0)} quarantined, ${number(q.redrive_requested || 0)} waiting for a re-drive, ` +
    `${number(q.redriven || 0)} re-driven.`);
  if (entries === null) {
    return section("Quarantined events", facts, h("p", { class: "muted" }, "Listing them needs an admin key."));
  }
  const rows = entries.map((e) => h("tr", {},
    h("td", {}, time(e.quarantined_at)),
    h("td", {}, `${e.source} / ${e.event_id}`),
    h("td", {}, e.type),
    h("td", {}, `${e.origin} ${e.partition}@${e.offset}`),
    h("td", {}, e.reason),
    h("td", {}, e.pack_version),
    h("td", {}, e.status === "quarantined"
      ? h("button", { type: "button", onclick: () => onRedrive(e) }, "Re-drive")
      : e.status)));
  return section("Quarantined events", facts,
    table("Latest quarantined events", ["Quarantined", "Source / event", "Type", "Where", "Reason", "Pack", ""], rows,
      "No event has been quarantined."));
}

function view(stats, entries, onRedrive) {
  const s = stats.series;
  const times = s.map((p) => p.at);
  const last = s.at(-1) || {};
  return [
    h("div", { class: "tiles" },
      tile("Ingested /s", number(last.ingested_per_s || 0, 1), "t-ingested"),
      tile("Processed /s", number(last.processed_per_s || 0, 1), "t-processed"),
      tile("Lag (events)", number(stats.lag_events), "t-lag"),
      tile("Alerts /s", number(last.alerts_per_s || 0, 2), "t-alerts"),
      tile("Rejected (total)", number(stats.totals.rejected), "t-rejected"),
      tile("Late (total)", number(stats.totals.late), "t-late"),
      tile("Quarantined", number((stats.quarantine || {}).quarantined || 0), "t-quarantined"),
      tile("Notification failures", number(stats.totals.notification_failures), "t-failures"),
      tile("Dead letters", number(stats.notifications.dead), "t-dead")),
    h("div", { class: "charts" },
      lineChart("Events per second", times, [
        { name: "ingested", values: s.map((p) => p.ingested_per_s) },
        { name: "processed", values: s.map((p) => p.processed_per_s) }], "/s"),
      lineChart("Processor lag (events)", times, [{ name: "lag", values: s.map((p) => p.lag_events) }]),
      lineChart("Alerts per second", times, [{ name: "alerts", values: s.map((p) => p.alerts_per_s) }], "/s"),
      lineChart("Rejected and late events per second", times, [
        { name: "rejected", values: s.map((p) => p.rejected_per_s) },
        { name: "late", values: s.map((p) => p.late_per_s) }], "/s"),
      lineChart("Notification failures per second", times, [{ name: "failures", values: s.map((p) => p.notification_failures_per_s) }], "/s"),
      lineChart("Dead letters (waiting for a re-drive)", times, [{ name: "dead letters", values: s.map((p) => p.dead_letters) }])),
    h("div", { class: "two-col" },
      section("Lag per partition", barChart("Events behind, per partition",
        stats.partitions.map((p) => [`partition ${p.partition}`, p.lag_events]))),
      section("Pipeline", h("dl", { class: "facts" },
        h("dt", {}, "Log head"), h("dd", {}, number(stats.log_head)),
        h("dt", {}, "Processed offset"), h("dd", {}, number(stats.processed_offset)),
        h("dt", {}, "Ingested since start"), h("dd", {}, number(stats.totals.ingested)),
        h("dt", {}, "Duplicates since start"), h("dd", {}, number(stats.totals.duplicates)),
        h("dt", {}, "Late events stored"), h("dd", {}, number(stats.late_events_stored)),
        h("dt", {}, "Notifications sent / pending / dead / superseded"),
        h("dd", {}, `${number(stats.notifications.sent)} / ${number(stats.notifications.pending)} / ${number(stats.notifications.dead)} / ${number(stats.notifications.superseded ?? 0)}`)))),
    fxSection(stats.fx),
    quarantineSection(stats, entries, onRedrive),
  ];
}

export async function render(main) {
  document.title = "Operations · Ringfence";
  const body = h("div", { id: "ops" });
  main.replaceChildren(h("div", { class: "title-row" }, h("h1", {}, "Operations"), h("span", { class: "live on" }, "● refreshes every 2 s")), body);
  let stopped = false;
  addEventListener("pagehide", () => { stopped = true; });
  const me = await session().catch(() => ({}));
  const admin = (me.scopes || []).includes("admin");
  async function redrive(entry) {
    try {
      await api(`/v1/quarantine/${encodeURIComponent(entry.id)}/redrive`, { method: "POST" });
      announce(`Event ${entry.event_id} handed back for processing.`);
    } catch (error) {
      announce(`Re-drive failed: ${error.message}`);
    }
  }
  async function refresh() {
    try {
      const stats = await api("/v1/stats");
      const entries = admin ? (await api("/v1/quarantine?limit=10")).items : null;
      body.replaceChildren(...view(stats, entries, redrive));
    } catch (error) {
      if (error.status === 403) {  // the figures count every desk's alerts: not for a key limited to some
        body.replaceChildren(h("p", { class: "muted", role: "status", id: "ops-forbidden" },
          "Operations figures count every desk's alerts: viewing them needs a key that sees every desk."));
        return;  // asking again every 2 s would get the same answer
      }
      body.replaceChildren(errorBox(error));
    }
    if (!stopped) setTimeout(refresh, 2000);
  }
  await refresh();
}
