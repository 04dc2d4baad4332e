// The live page: one event stream from the xtask (`/events`), rendered with the DOM alone.
"use strict";
const token = document.querySelector('meta[name="aether-token"]').content;
const $ = (sel, root = document) => root.querySelector(sel);
const short = (d) => (d ? d.slice(0, 12) : "nothing");
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};

function appSection(app) {
  const id = "app-" + app;
  let s = document.getElementById(id);
  if (s) return s;
  s = el("section", { id, class: "app", "aria-labelledby": id + "-h", "data-app": app });
  s.append(
    el("h2", { id: id + "-h", text: app }),
    el("p", { class: "wanted", text: "waiting for the first poll…" }),
    el("table", { class: "fleet" },
      el("caption", { text: "Pods and the release each serves" }),
      el("thead", {}, el("tr", {},
        ...["Pod", "Serves", "Generation", "Last fetch", "State"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody")),
  );
  const sel = el("select", { id: id + "-to" });
  const patch = el("button", { type: "button", "data-act": "hot-patch", text: "Hot-patch the latest upload" });
  const back = el("button", { type: "button", "data-act": "rollback", text: "Roll back to the chosen release" });
  const status = el("span", { class: "action-status", role: "status", "aria-live": "polite" });
  patch.addEventListener("click", () => act(app, "hot-patch", {}, patch, status));
  back.addEventListener("click", () => act(app, "rollback", sel.value ? { digest: sel.value } : {}, back, status));
  s.append(
    el("div", { class: "actions" }, patch, el("label", { for: id + "-to", text: "Release" }), sel, back, status),
    el("h3", { text: "Reloads (newest first)" }),
    el("p", { class: "legend", text: "Each bar runs from the start of the reload; per pod: waiting until it saw the release, download, verify+extract, swap, app ready." }),
    el("ol", { class: "reloads" }),
  );
  $("#apps").append(s);
  return s;
}

async function act(app, what, body, button, status) {
  button.disabled = true;
  status.textContent = what + " running…";
  try {
    const r = await fetch("/api/" + what, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Aether-Token": token },
      body: JSON.stringify({ app, ...body }),
    });
    const v = await r.json();
    status.textContent = r.ok ? v.message : "failed: " + v.error;
    status.className = "action-status " + (r.ok ? "ok" : "bad");
  } catch (e) {
    status.textContent = "failed: " + e;
    status.className = "action-status bad";
  } finally {
    button.disabled = false;
  }
}

function onFleet(d) {
  const s = appSection(d.app);
  const f = d.fleet;
  const wanted = d.desired.digest;
  const state = d.error ? "status unreadable: " + d.error
    : f.pods === 0 ? "no pod running"
    : f.in_sync ? "in sync" : f.skew ? "SKEW: pods serve different releases" : "NOT in sync";
  const p = $(".wanted", s);
  p.replaceChildren(
    "target " + d.target + " · wants ",
    el("code", { "data-wanted": wanted || "", text: short(wanted) }),
    " generation " + d.desired.generation + " · ",
    el("span", { class: f.in_sync ? "ok" : "bad", text: state }),
  );
  const rows = d.pods.map((pod) => {
    const m = f.members.find((x) => x.pod === pod.pod) || {};
    const fetch = pod.fetch && pod.fetch.digest === pod.digest
      ? `${pod.fetch.download_ms + pod.fetch.verify_extract_ms} ms at ${pod.fetched_at || "?"}` : pod.fetched_at || "never";
    let st = m.in_sync ? "serving" : (m.reason || pod.error || "?");
    if (pod.last_error) st += " · last error: " + pod.last_error;
    if (pod.runner && pod.runner.inspector) st += " · inspector on";
    return el("tr", { "data-pod": pod.pod, "data-serves": m.serves || "" },
      el("th", { scope: "row", text: pod.pod }),
      el("td", { class: "mono serves", text: short(m.serves) }),
      el("td", { text: m.generation ?? "-" }),
      el("td", { text: fetch }),
      el("td", { class: m.in_sync ? "ok" : "bad", text: st }));
  });
  $("tbody", s).replaceChildren(...rows);
}

function onReleases(d) {
  const sel = $("select", appSection(d.app));
  const keep = sel.value;
  const opts = (d.releases || []).map((r) => {
    const p = r.provenance;
    const git = p && p.source.git ? `${p.source.git.commit.slice(0, 8)}${p.source.git.dirty ? "+dirty" : ""} ` : "";
    const what = p ? `${git}${p.created_at} by ${p.built_by}` : "";
    const label = `${r.seq ? "#" + r.seq + " " : ""}${short(r.digest)}${r.live ? " (live)" : ""} ${what}`.trim();
    return el("option", { value: r.digest, text: label });
  });
  sel.replaceChildren(...opts);
  if (keep && opts.some((o) => o.value === keep)) sel.value = keep;
}

// Per pod: [label, from, to] in ms from the reload's start.
function podSegments(pt, t0) {
  const segs = [];
  const at = (x) => (x == null ? null : x - t0);
  const seen = at(pt.seen_at_ms);
  let end = seen;
  if (seen != null) {
    segs.push(["until seen", 0, seen]);
    if (pt.download_ms != null) { segs.push(["download", end, end + pt.download_ms]); end += pt.download_ms; }
    if (pt.verify_extract_ms != null) {
      // Until the release was complete on disk, as the whole reload's row counts it.
      const ready = pt.ready_at_ms != null ? at(pt.ready_at_ms) : end + pt.verify_extract_ms;
      segs.push(["verify+extract", end, ready]);
      end = ready;
    }
  }
  const pub = at(pt.published_at_ms);
  if (pub != null) { segs.push(["swap", end ?? pub, pub]); end = pub; }
  const sw = at(pt.switched_at_ms);
  if (sw != null) segs.push(["app ready", end ?? sw, sw]);
  return segs;
}

// One colour per stage, the same in every row (the label is written in the bar as well).
const KIND = { download: 1, "verify+extract": 2, swap: 3, "app ready": 4, "first response": 5 };

function track(segs, span) {
  const t = el("div", { class: "track" });
  segs.forEach(([label, from, to]) => {
    const ms = Math.max(0, Math.round(to - from));
    const seg = el("span", { class: "seg k" + (KIND[label] ?? 0), title: `${label} ${ms} ms`, text: `${label} ${ms}` });
    seg.style.left = (100 * Math.max(0, from) / span) + "%";
    seg.style.width = (100 * Math.max(0, to - from) / span) + "%";
    t.append(seg);
  });
  return t;
}

function onReload(d) {
  const s = appSection(d.app);
  const tr = d.trace;
  const ol = $(".reloads", s);
  let cum = 0;
  const stages = tr.stages.map((x) => { const r = [x.stage, cum, cum + x.ms]; cum += x.ms; return r; });
  const t0 = tr.started_at_ms;
  const pods = tr.per_pod.map((p) => [p.pod, podSegments(p, t0)]);
  const span = Math.max(1, tr.total_ms, ...pods.flatMap(([, ss]) => ss.map((x) => x[2])));
  const failed = tr.failed_requests > 0;
  const li = el("li", { class: "reload", "data-generation": d.generation, "data-digest": tr.digest, tabindex: "0",
    "aria-label": `generation ${d.generation}, ${short(tr.digest)}, ${tr.total_ms} ms, ${tr.failed_requests} of ${tr.requests} requests failed` });
  const head = el("div", { class: "head" },
    el("strong", { text: "generation " + d.generation }),
    el("code", { text: short(tr.digest) }),
    el("span", { text: `${tr.total_ms} ms on ${tr.pods} pod${tr.pods === 1 ? "" : "s"}${tr.barrier ? " (together)" : ""}` }),
    el("span", { class: "legend", text: "from " + d.source }),
    el("span", { class: failed ? "bad" : "ok", text: tr.requests ? `${tr.failed_requests} of ${tr.requests} probe requests failed` : "no request probed" }));
  if (tr.spread_ms != null) head.append(el("span", { text: `replicas switched within ${tr.spread_ms} ms` }));
  const wf = el("div", { class: "waterfall" }, el("span", { class: "who", text: "all pods" }), track(stages, span));
  for (const [pod, segs] of pods) wf.append(el("span", { class: "who", title: pod, text: pod }), track(segs, span));
  // The figures in words too: a narrow bar cuts its label short.
  const sr = el("p", { class: "legend stages", text: tr.stages.map((x) => `${x.stage} ${x.ms} ms`).join(" · ") });
  li.append(head, wf, sr);
  const old = ol.querySelector(`[data-generation="${d.generation}"]`);
  if (old) old.replaceWith(li);
  else ol.prepend(li);
  while (ol.children.length > 20) ol.lastChild.remove();
}

const logs = $("#logs");
function visible(line) {
  const q = $("#filter").value.toLowerCase();
  const kind = line.dataset.stream === "fetcher" ? $("#show-fetcher") : $("#show-app");
  return kind.checked && (!q || line.textContent.toLowerCase().includes(q));
}
function onLog(d) {
  const line = el("div", { class: d.stream, "data-stream": d.stream, "data-pod": d.pod },
    el("span", { class: "pod", text: `[${d.pod}${d.stream === "fetcher" ? " fetcher" : ""}] ` }), d.text);
  line.hidden = !visible(line);
  logs.append(line);
  while (logs.children.length > 1000) logs.firstChild.remove();
  if ($("#follow").checked) logs.scrollTop = logs.scrollHeight;
}
const refilter = () => { for (const l of logs.children) l.hidden = !visible(l); };
for (const id of ["#filter", "#show-app", "#show-fetcher"]) $(id).addEventListener("input", refilter);

const events = new EventSource("/events?token=" + encodeURIComponent(token));
events.onopen = () => { $("#conn").textContent = "live"; };
events.onerror = () => { $("#conn").textContent = "disconnected: retrying (is `cargo xtask ui` still running?)"; };
const handlers = { fleet: onFleet, releases: onReleases, reload: onReload, log: onLog };
for (const [kind, f] of Object.entries(handlers)) {
  events.addEventListener(kind, (e) => f(JSON.parse(e.data)));
}
