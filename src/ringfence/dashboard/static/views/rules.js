// Rules: the loaded pack, each detection's mode and recent hits, and a validator for a
// candidate pack pasted as YAML.
import { api, can, session } from "../api.js";
import { h, field, table, time, badge, number, errorBox, section } from "../ui.js";

function hits(counts, mode) {
  // null: the detection's audience is not one this key sees (its hits count another desk's alerts)
  return counts === null ? "—" : number((counts || {})[mode] || 0);
}

export async function render(main) {
  document.title = "Rules · Ringfence";
  const pack = await api("/v1/rules");
  const me = await session().catch(() => ({}));
  const author = can(me, "rules:write");  // validating is a dry run of PUT /v1/rules
  const rows = pack.detections.map((d) => h("tr", { "data-rule-id": d.id },
    h("th", { scope: "row" }, h("a", { href: `/?rule_id=${encodeURIComponent(d.id)}` }, d.id), h("div", { class: "muted small" }, d.description)),
    h("td", {}, d.kind),
    h("td", {}, badge("mode", d.mode)),
    h("td", {}, badge("severity", d.severity)),
    h("td", {}, d.audience),
    h("td", { class: "num" }, hits(d.hits_last_hour, "live")),
    h("td", { class: "num" }, hits(d.hits_last_hour, "shadow")),
    h("td", { class: "num" }, hits(d.hits_last_day, "live")),
    h("td", { class: "num" }, hits(d.hits_last_day, "shadow"))));

  const candidate = h("textarea", { name: "candidate", rows: 12, spellcheck: "false", class: "code" });
  const result = h("div", { "aria-live": "polite", id: "validation" });
  const form = h("form", { "aria-label": "Validate a candidate pack" },
    field("Candidate rule pack (YAML)", candidate),
    h("button", { type: "submit" }, "Validate"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await api("/v1/rules/validate", { method: "POST", body: candidate.value, contentType: "application/yaml" });
      result.replaceChildren(h("p", { class: "ok", role: "status" },
        `Valid: version ${r.version}, ${r.detections} detections.`,
        r.state_reset.length ? ` Activating it would reset state of: ${r.state_reset.join(", ")}.` : " No feature state would be reset."));
    } catch (error) {
      result.replaceChildren(errorBox(error));
    }
  });
  candidate.value = pack.text;

  main.replaceChildren(
    h("h1", {}, "Rules"),
    h("dl", { class: "facts" },
      h("dt", {}, "Pack version"), h("dd", { id: "pack-version" }, pack.version),
      h("dt", {}, "Digest"), h("dd", {}, h("code", {}, pack.digest.slice(0, 16))),
      h("dt", {}, "Activated"), h("dd", {}, pack.activated_at ? [time(pack.activated_at), ` by ${pack.activated_by}`] : "built-in default"),
      h("dt", {}, "Contents"), h("dd", {}, `${pack.detections.length} detections, ${pack.features.length} features, ${pack.anomalies.length} anomaly detectors`)),
    section("Detections and hits",
      table("Detections", ["Detection", "Kind", "Mode", "Severity", "Audience", "Live 1 h", "Shadow 1 h", "Live 24 h", "Shadow 24 h"], rows)),
    author
      ? section("Validate a candidate pack", h("p", { class: "muted" }, "Paste a pack; nothing is activated here."), form, result)
      : section("Validate a candidate pack", h("p", { class: "muted", id: "validate-needs-write" }, "Validating a candidate pack needs a key with rules:write.")));
}
