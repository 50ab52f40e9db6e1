// The status page's live updates: one EventSource on /status/events, each "snapshot" event re-renders the figures.
// Everything is written with textContent: host ids, labels and error messages come from outside and are never HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function clock(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "" : d.toISOString().slice(11, 19);
  }

  function stamp(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "" : d.toISOString().slice(0, 19).replace("T", " ");
  }

  function rows(tbody, items, render, empty, cols) {
    const frag = document.createDocumentFragment();
    for (const it of items) frag.appendChild(render(it));
    if (items.length === 0) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = cell(tr, empty);
      td.colSpan = cols;
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
  }

  function render(v) {
    $("answered-by").textContent = v.replica;
    $("updated").textContent = clock(v.at);
    $("hosts-online").textContent = String(v.hosts_online);
    $("rate").textContent = v.exchanges_per_second == null ? "–" : v.exchanges_per_second.toFixed(1);
    $("in-flight").textContent = String(v.exchanges_in_flight);
    $("exchanges-total").textContent = String(v.exchanges_total);
    $("replica-count").textContent = String(v.replicas.length);
    $("unreachable").textContent = v.unreachable ? v.unreachable + " not answering" : "";

    rows(document.querySelector("#replicas tbody"), v.replicas, (r) => {
      const tr = document.createElement("tr");
      tr.dataset.replica = r.id;
      cell(tr, r.id);
      const st = document.createElement("span");
      if (!r.reachable) { st.className = "bad"; st.textContent = "not answering: " + (r.error || ""); }
      else if (r.draining) { st.className = "warn"; st.textContent = "draining"; }
      else { st.className = "good"; st.textContent = "serving"; }
      cell(tr, "").appendChild(st);
      cell(tr, r.version || "");
      cell(tr, r.started ? stamp(r.started) : "");
      cell(tr, String(r.tunnels), "num");
      cell(tr, String(r.exchanges_in_flight), "num");
      cell(tr, String(r.exchanges_total || 0), "num");
      cell(tr, r.lease_age_seconds == null ? "–" : r.lease_age_seconds.toFixed(1) + " s", "num");
      return tr;
    }, "no replica answered", 8);

    rows(document.querySelector("#errors tbody"), v.errors, (e) => {
      const tr = document.createElement("tr");
      tr.dataset.code = e.code;
      cell(tr, e.code);
      cell(tr, String(e.count), "num");
      return tr;
    }, "none since the replicas started", 2);

    rows(document.querySelector("#events tbody"), v.events, (e) => {
      const tr = document.createElement("tr");
      cell(tr, clock(e.at));
      cell(tr, e.type, "ev-" + e.type);
      cell(tr, e.host_id);
      cell(tr, e.replica || "");
      return tr;
    }, "none since this replica started", 4);
  }

  function connect() {
    const live = $("live");
    const es = new EventSource("/status/events");
    es.addEventListener("snapshot", (m) => {
      live.textContent = "live";
      live.className = "live on";
      render(JSON.parse(m.data));
    });
    es.onerror = () => {
      live.textContent = "reconnecting";
      live.className = "live off";
    };
  }

  connect();
})();
