// One alert: what fired and why (evidence as a timeline of masked events and the feature
// values at firing), its history and comments, and the triage actions.
import { api, can } from "../api.js";
import { h, field, select, table, time, badge, number, errorBox, section, flatten, featureValue, announce } from "../ui.js";

const SILENCE_HOURS = [["1", "1 hour"], ["4", "4 hours"], ["24", "24 hours"], ["168", "7 days"]];

function quoteMatcher(value) {
  return `"${String(value).replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

function timeline(alert, loaded) {
  const data = new Map(loaded.items.map((item) => [item.offset, item.event]));
  const events = [...(alert.evidence.events || [])].sort((a, b) => a.occurred_at.localeCompare(b.occurred_at));
  const last = alert.evidence.events ? alert.evidence.events.at(-1) : null;
  return h("ol", { class: "timeline", "aria-label": "Evidence timeline" }, events.map((e) => {
    const event = data.get(e.offset);
    const fired = last && e.offset === last.offset;
    return h("li", { class: fired ? "fired" : null },
      h("div", { class: "when" }, time(e.occurred_at), e.late ? h("span", { class: "badge late" }, "late") : null),
      h("div", { class: "what" },
        h("strong", {}, e.type), " ", h("code", {}, e.event_id), fired ? h("span", { class: "badge fired-tag" }, "rule fired") : null,
        event
          ? h("dl", { class: "kv" }, flatten({ source: event.source, account_id: event.account_id, ...event.data })
            .filter(([, v]) => v !== undefined && v !== null)
            .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]))
          : h("p", { class: "muted" }, "Event no longer in the log (retention)."),
        e.features && Object.keys(e.features).length && !fired
          ? h("p", { class: "muted small" }, "features then: ", Object.entries(e.features).map(([k, v]) => `${k}=${featureValue(v)}`).join(", "))
          : null));
  }));
}

function features(alert) {
  const entries = Object.entries(alert.evidence.features || {});
  return table("Feature values when the rule fired", ["Feature", "Value"],
    entries.map(([name, value]) => h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num" }, featureValue(value)))),
    "This rule used no features.");
}

function activity(alert) {
  const items = [
    ...alert.history.map((e) => ({ at: e.at, who: e.actor, text: [e.action, e.from_status && e.to_status ? `${e.from_status} → ${e.to_status}` : null, e.reason].filter(Boolean).join(" · ") })),
    ...alert.comments.map((c) => ({ at: c.at, who: c.author, text: `💬 ${c.text}` })),
  ].sort((a, b) => a.at.localeCompare(b.at));
  // the API sends the newest 100 of each; say what it left out rather than imply it never was
  const omitted = [[alert.history_omitted, "history entries"], [alert.comments_omitted, "comments"]]
    .filter(([n]) => n > 0).map(([n, what]) => `${n} older ${what}`);
  const list = h("ol", { class: "activity", "aria-label": "History and comments" },
    items.map((i) => h("li", {}, time(i.at), " ", h("span", { class: "who" }, i.who), " ", h("span", {}, i.text))));
  return omitted.length ? h("div", {}, h("p", { class: "muted" }, `Not shown: ${omitted.join(" and ")}.`), list) : list;
}

export async function render(main, { session, param }) {
  const id = param;
  const [alert, loaded] = await Promise.all([
    api(`/v1/alerts/${encodeURIComponent(id)}`),
    api(`/v1/alerts/${encodeURIComponent(id)}/events`),
  ]);
  document.title = `${alert.title} · Ringfence`;
  const writable = can(session, "alerts:write");

  async function act(label, path, body) {
    try {
      await api(`/v1/alerts/${encodeURIComponent(id)}${path}`, { method: "POST", body });
      await render(main, { session, param });
      announce(`${label}: done`);
    } catch (error) {
      announce(`${label}: ${error.message}`);
    }
  }

  const reason = h("input", { name: "reason", maxlength: 1000, placeholder: "why (optional)" });
  const ack = h("button", { type: "button", id: "ack", disabled: !writable || alert.status !== "open" }, "Acknowledge");
  const resolve = h("button", { type: "button", id: "resolve", disabled: !writable || alert.status === "resolved" }, "Resolve");
  ack.addEventListener("click", () => act("Acknowledge", "/ack", { reason: reason.value }));
  resolve.addEventListener("click", () => act("Resolve", "/resolve", { reason: reason.value }));

  const assignee = h("input", { name: "assignee", maxlength: 128, value: alert.assignee || "", required: true });
  const assignForm = h("form", { class: "inline", "aria-label": "Assign" }, field("Assign to", assignee),
    h("button", { type: "submit", disabled: !writable }, "Assign"));
  assignForm.addEventListener("submit", (e) => { e.preventDefault(); act("Assign", "/assign", { assignee: assignee.value.trim(), reason: reason.value }); });

  const comment = h("textarea", { name: "comment", rows: 2, maxlength: 4000, required: true });
  const commentForm = h("form", { class: "inline", "aria-label": "Comment" }, field("Comment", comment),
    h("button", { type: "submit", disabled: !writable }, "Add comment"));
  commentForm.addEventListener("submit", (e) => { e.preventDefault(); act("Comment", "/comments", { text: comment.value }); });

  const hours = select("silence_hours", SILENCE_HOURS, "4");
  const onlyCustomer = h("input", { type: "checkbox", name: "only_customer", checked: Boolean(alert.customer_id), disabled: !alert.customer_id });
  const silenceWhy = h("input", { name: "silence_comment", required: true, maxlength: 1000, placeholder: "why" });
  const silenceForm = h("form", { class: "inline", "aria-label": "Silence similar alerts" },
    field("Silence for", hours),
    field("Only this customer", onlyCustomer),
    field("Reason", silenceWhy),
    h("button", { type: "submit", class: "secondary", disabled: !writable }, "Silence similar"));
  silenceForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const matchers = [`rule_id=${quoteMatcher(alert.rule_id)}`];
    if (onlyCustomer.checked && alert.customer_id) matchers.push(`customer_id=${quoteMatcher(alert.customer_id)}`);
    const endsAt = new Date(Date.now() + Number(hours.value) * 3600 * 1000).toISOString();
    try {
      const silence = await api("/v1/silences", { method: "POST", body: { matchers, ends_at: endsAt, comment: silenceWhy.value } });
      announce(`Silenced ${matchers.join(", ")} until ${new Date(silence.ends_at).toLocaleString()}`);
    } catch (error) {
      announce(`Silence: ${error.message}`);
    }
  });

  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/" }, "← Alerts")),
    h("div", { class: "title-row" }, h("h1", {}, alert.title), badge("severity", alert.severity), h("span", { id: "alert-status" }, badge("status", alert.status))),
    h("p", { class: "summary" }, alert.summary),
    h("dl", { class: "facts" },
      h("dt", {}, "Rule"), h("dd", {}, h("a", { href: `/?rule_id=${encodeURIComponent(alert.rule_id)}` }, alert.rule_id), ` · pack ${alert.rule_version}`),
      h("dt", {}, "Customer"), h("dd", {}, alert.customer_id ? h("a", { href: `/customers/${encodeURIComponent(alert.customer_id)}` }, alert.customer_id) : "—"),
      h("dt", {}, "Audience"), h("dd", {}, alert.audience),
      h("dt", {}, "Assignee"), h("dd", {}, alert.assignee || "nobody"),
      h("dt", {}, "Seen"), h("dd", {}, number(alert.count), " × between ", time(alert.first_seen), " and ", time(alert.last_seen)),
      h("dt", {}, "Alert id"), h("dd", {}, h("code", {}, alert.id))),
    h("ul", { class: "labels", "aria-label": "Labels" }, Object.entries(alert.labels).map(([k, v]) => h("li", {}, `${k}=${v}`))),
    section("Actions",
      writable ? null : h("p", { class: "muted" }, "Your key may read alerts but not change them."),
      h("div", { class: "actions" }, field("Reason", reason), ack, resolve),
      assignForm, commentForm, silenceForm),
    h("div", { class: "two-col" },
      section("Evidence", timeline(alert, loaded)),
      section("Features at firing", features(alert))),
    section("History and comments", activity(alert)));
}
