"use strict";
(() => {
  // The key lives in sessionStorage only (this tab), goes out as a header, never in a URL or a log.
  const KEY_STORAGE = "synchook.apiKey";
  const API = window.location.pathname.replace(/\/admin\/?$/, "") + "/v1";
  const STATUSES = ["pending", "succeeded", "failed", "dead", "cancelled"];
  const $ = (id) => document.getElementById(id);
  const state = { cursor: null, selected: null, replayTimer: null, pendingBulk: null };

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(method, path, body) {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const headers = { "Accept": "application/json", "Authorization": "Bearer " + key };
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const response = await fetch(API + path, init);
    const payload = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = payload.error || {};
      if (response.status === 401) { signOut("Your key was refused (" + (error.message || "invalid key") + ")."); }
      throw new ApiError(response.status, error.code || "error", error.message || ("HTTP " + response.status));
    }
    return payload;
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }
  const badge = (status) => el("span", status, "badge " + status);
  const short = (id) => (id ? id.slice(0, 8) + "…" + id.slice(-6) : "—");
  const when = (iso) => (iso ? iso.replace("T", " ").replace("Z", "") : "—");
  const showError = (node, error) => { node.textContent = error.message; node.hidden = false; };
  const localToIso = (value) => (value ? new Date(value).toISOString() : null);
  function query(params) {
    const parts = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "");
    return parts.length ? "?" + parts.map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v)).join("&") : "";
  }

  // --- session --------------------------------------------------------------------------------

  function signedIn() {
    const key = sessionStorage.getItem(KEY_STORAGE);
    $("signin").hidden = !!key;
    $("app").hidden = !key;
    $("session").hidden = !key;
    if (key) $("key-hint").textContent = key.slice(0, 8) + "…";
    return !!key;
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORAGE);
    stopPolling();
    signedIn();
    if (message) showError($("signin-error"), new Error(message));
  }

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("api-key");
    const key = input.value.trim();
    input.value = "";
    $("signin-error").hidden = true;
    sessionStorage.setItem(KEY_STORAGE, key);
    try {
      await api("GET", "/webhooks/deliveries?limit=1");
    } catch (error) {
      sessionStorage.removeItem(KEY_STORAGE);
      signedIn();
      showError($("signin-error"), error);
      return;
    }
    signedIn();
    start();
  });
  $("sign-out").addEventListener("click", () => signOut());

  // --- deliveries -------------------------------------------------------------------------------

  function filters() {
    return {
      status: $("status-filter").value,
      subscription_id: $("subscription-filter").value.trim(),
      event_type: $("event-type-filter").value.trim(),
      since: localToIso($("since-filter").value),
      until: localToIso($("until-filter").value),
    };
  }

  function renderChips() {
    const box = $("status-chips");
    box.replaceChildren();
    for (const status of ["", ...STATUSES]) {
      const chip = el("button", status || "all");
      chip.type = "button";
      chip.dataset.status = status;
      if ($("status-filter").value === status) chip.classList.add("active");
      chip.addEventListener("click", () => { $("status-filter").value = status; loadDeliveries(false); });
      box.append(chip);
    }
  }

  async function loadDeliveries(more) {
    $("list-error").hidden = true;
    renderChips();
    const tbody = $("deliveries").querySelector("tbody");
    if (!more) { tbody.replaceChildren(); state.cursor = null; }
    let page;
    try {
      page = await api("GET", "/webhooks/deliveries" + query({ ...filters(), limit: 25, cursor: more ? state.cursor : null }));
    } catch (error) { showError($("list-error"), error); return; }
    for (const delivery of page.data) tbody.append(deliveryRow(delivery));
    state.cursor = page.next_cursor;
    $("load-more").hidden = !page.next_cursor;
    $("deliveries-empty").hidden = tbody.children.length > 0;
  }

  function deliveryRow(delivery) {
    const row = document.createElement("tr");
    row.dataset.id = delivery.id;
    const id = el("td"); id.append(el("code", short(delivery.id))); id.title = delivery.id;
    const sub = el("td"); sub.append(el("code", short(delivery.subscription_id))); sub.title = delivery.subscription_id;
    const status = el("td"); status.append(badge(delivery.status));
    const last = delivery.last_status_code ? "HTTP " + delivery.last_status_code : (delivery.last_error || "—");
    row.append(id, el("td", delivery.event_type), sub, status, el("td", delivery.attempt_count), el("td", last),
      el("td", when(delivery.created_at)));
    if (state.selected === delivery.id) row.classList.add("selected");
    row.addEventListener("click", () => openDelivery(delivery.id));
    return row;
  }

  $("filters").addEventListener("submit", (event) => { event.preventDefault(); loadDeliveries(false); });
  $("load-more").addEventListener("click", () => loadDeliveries(true));

  // --- one delivery -----------------------------------------------------------------------------

  async function openDelivery(id, keepNotice) {
    state.selected = id;
    for (const row of $("deliveries").querySelectorAll("tbody tr")) row.classList.toggle("selected", row.dataset.id === id);
    let detail;
    try { detail = (await api("GET", "/webhooks/deliveries/" + encodeURIComponent(id))).data; } catch (error) {
      showError($("list-error"), error); return;
    }
    $("detail").hidden = false;
    if (!keepNotice) $("replay-result").hidden = true;
    $("detail-id").textContent = detail.id;
    const facts = $("detail-facts");
    facts.replaceChildren();
    const add = (name, value) => { facts.append(el("dt", name)); const dd = el("dd"); dd.append(value); facts.append(dd); };
    add("Status", badge(detail.status));
    add("Event", el("code", detail.event_id + " (" + detail.event_type + ")"));
    add("Subscription", el("code", detail.subscription_id));
    add("Attempts in this sequence", String(detail.attempt_count));
    add("Replays", String(detail.replays));
    add("Next attempt", when(detail.next_attempt_at));
    add("Created", when(detail.created_at));
    add("Completed", when(detail.completed_at));
    if (detail.cancel_reason) add("Cancelled because", detail.cancel_reason);
    const tbody = $("attempts").querySelector("tbody");
    tbody.replaceChildren();
    for (const attempt of detail.attempts) {
      const response = el("td"); if (attempt.response_body) response.append(el("pre", attempt.response_body.slice(0, 600)));
      const code = el("td"); code.append(attempt.status_code ? badge(String(attempt.status_code)) : el("span", "—"));
      if (attempt.status_code) code.firstChild.classList.add(attempt.status_code < 300 ? "succeeded" : "failed");
      const row = document.createElement("tr");
      row.append(el("td", attempt.number), el("td", when(attempt.started_at)), el("td", attempt.duration_ms + " ms"),
        code, el("td", attempt.error || "—"), response);
      tbody.append(row);
    }
    $("attempts-empty").hidden = detail.attempts.length > 0;
    $("event-body").textContent = JSON.stringify(detail.event, null, 2);
    renderChange(detail.event);
    $("replay-one").disabled = detail.status === "pending";
  }

  // --- calendar change events (CONTRACT §6.2) ----------------------------------------------------

  const CHANGE_PREFIX = "calendar.event.";
  // A field's value as one line: strings as they are, anything else (times, attendees…) as compact JSON.
  const fieldText = (value) => (value === null || value === undefined ? "—" :
    typeof value === "string" ? value : JSON.stringify(value));

  function renderChange(event) {
    const box = $("change");
    const tbody = $("change-diff").querySelector("tbody");
    tbody.replaceChildren();
    const data = event && event.data;
    if (!event || !event.type.startsWith(CHANGE_PREFIX) || !data || typeof data !== "object") { box.hidden = true; return; }
    const kind = event.type.slice(CHANGE_PREFIX.length);
    const item = data.event || {};
    $("change-kind").textContent = kind;
    $("change-kind").className = "badge change-" + kind;
    const facts = $("change-facts");
    facts.replaceChildren();
    const add = (name, value) => { facts.append(el("dt", name)); facts.append(el("dd", value)); };
    add("Title", fieldText(item.title));
    add("Calendar", fieldText(data.calendar_id || item.calendar_id));
    if (data.sequence !== undefined) add("Sequence", String(data.sequence));
    const fields = Array.isArray(data.changed_fields) ? data.changed_fields : [];
    add("Changed fields", fields.length ? fields.join(", ") : "—");
    const previous = data.previous && typeof data.previous === "object" ? data.previous : null;
    // Before a created event there was nothing: on a calendar's first import that is the import itself.
    const before = (field) => (previous ? fieldText(previous[field]) : data.initial ? "initial import" : "(new)");
    if (kind === "deleted") {
      tbody.append(diffRow("event", fieldText(item.title), "deleted", "deleted"));
    }
    for (const field of fields) {
      const row = diffRow(field, before(field), fieldText(item[field]));
      if (!previous) row.cells[1].classList.add("muted");
      tbody.append(row);
    }
    $("change-diff").hidden = tbody.children.length === 0;
    box.hidden = false;
  }

  function diffRow(field, before, after, afterClass) {
    const row = document.createElement("tr");
    row.dataset.field = field;
    row.append(el("td", field, "field"), el("td", before, "before"), el("td", "→", "arrow"),
      el("td", after, "after" + (afterClass ? " " + afterClass : "")));
    return row;
  }

  $("close-detail").addEventListener("click", () => { $("detail").hidden = true; state.selected = null; });

  $("replay-one").addEventListener("click", async () => {
    const id = state.selected;
    const notice = $("replay-result");
    notice.className = "notice";
    try {
      const result = (await api("POST", "/webhooks/deliveries/" + encodeURIComponent(id) + "/replay")).data;
      notice.textContent = "Replay started (" + result.replay_id + "): a fresh retry sequence, same webhook-id.";
    } catch (error) {
      notice.className = "error";
      notice.textContent = error.message + " (" + error.code + ")";
    }
    notice.hidden = false;
    await openDelivery(id, true);
    await loadDeliveries(false);
    await loadReplays();
  });

  // --- bulk replay ------------------------------------------------------------------------------

  function bulkBody() {
    const body = { since: localToIso($("bulk-since").value) };
    const until = localToIso($("bulk-until").value);
    if (until) body.until = until;
    const sub = $("bulk-subscription").value.trim();
    if (sub) body.subscription_id = sub;
    const types = $("bulk-event-types").value.split(",").map((t) => t.trim()).filter(Boolean);
    if (types.length) body.event_types = types;
    body.status = ["bulk-failed", "bulk-dead"].filter((id) => $(id).checked).map((id) => $(id).value);
    return body;
  }

  $("bulk-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("bulk-error").hidden = true;
    $("bulk-confirm-box").hidden = true;
    const body = bulkBody();
    let preview;
    try { preview = (await api("POST", "/webhooks/replays?dry_run=true", body)).data; } catch (error) {
      showError($("bulk-error"), error); return;
    }
    // The count the admin confirms goes with the request: past SYNCHOOK_REPLAY_MAX the server needs it
    // (422 replay_too_large otherwise), and if the matches changed since, it refuses rather than send more.
    state.pendingBulk = Object.assign({}, body, { confirm_count: preview.matched });
    const extra = preview.undelivered_events ? " (" + preview.deliveries + " deliveries replayed, " +
      preview.undelivered_events + " past events sent to the subscription for the first time)" : "";
    $("bulk-confirm-text").textContent = preview.matched === 1 ? "1 delivery will be sent" + extra + ". Go ahead?" :
      preview.matched + " deliveries will be sent" + extra + ". Go ahead?";
    $("bulk-confirm").disabled = preview.matched === 0;
    $("bulk-confirm-box").hidden = false;
  });

  $("bulk-abort").addEventListener("click", () => { $("bulk-confirm-box").hidden = true; state.pendingBulk = null; });

  $("bulk-confirm").addEventListener("click", async () => {
    const body = state.pendingBulk;
    $("bulk-confirm-box").hidden = true;
    let replay;
    try { replay = (await api("POST", "/webhooks/replays", body)).data; } catch (error) {
      if (error.code === "replay_too_large") {
        error.message += " The matches changed since the preview: preview again to confirm the new count.";
      }
      showError($("bulk-error"), error); return;
    }
    showProgress(replay);
    pollReplay(replay.id);
    loadReplays();
  });

  function showProgress(replay) {
    $("bulk-progress-box").hidden = false;
    $("bulk-id").textContent = replay.id;
    const status = $("bulk-status");
    status.textContent = replay.status;
    status.className = "badge " + replay.status;
    const done = replay.replayed + replay.skipped;
    const progress = $("bulk-progress");
    progress.max = Math.max(replay.matched, 1);
    progress.value = replay.status === "completed" ? progress.max : Math.min(done, progress.max);
    $("bulk-counts").textContent = replay.replayed + " replayed, " + replay.skipped + " skipped of " + replay.matched +
      " matched";
    $("bulk-cancel").hidden = !["queued", "running"].includes(replay.status);
  }

  function stopPolling() { if (state.replayTimer) { clearTimeout(state.replayTimer); state.replayTimer = null; } }

  async function pollReplay(id) {
    stopPolling();
    let replay;
    try { replay = (await api("GET", "/webhooks/replays/" + encodeURIComponent(id))).data; } catch (error) {
      showError($("bulk-error"), error); return;
    }
    showProgress(replay);
    if (["queued", "running"].includes(replay.status)) {
      state.replayTimer = setTimeout(() => pollReplay(id), 1000);
    } else {
      loadReplays();
      loadDeliveries(false);
    }
  }

  $("bulk-cancel").addEventListener("click", async () => {
    const id = $("bulk-id").textContent;
    try { showProgress((await api("POST", "/webhooks/replays/" + encodeURIComponent(id) + "/cancel")).data); } catch (error) {
      showError($("bulk-error"), error);
    }
  });

  // --- audit trail ------------------------------------------------------------------------------

  function describe(replay) {
    const c = replay.criteria || {};
    if (replay.kind === "single") return "delivery " + (c.delivery_id || "?");
    const parts = ["since " + when(c.since), "until " + when(c.until), (c.status || []).join("/")];
    if (c.subscription_id) parts.push("to " + c.subscription_id);
    if (c.event_types) parts.push(c.event_types.join(", "));
    return parts.join(" · ");
  }

  async function loadReplays() {
    const tbody = $("replays").querySelector("tbody");
    const note = $("replays-note");
    let page;
    try { page = await api("GET", "/webhooks/replays?limit=10"); } catch (error) {
      tbody.replaceChildren();
      note.textContent = error.status === 403 ? "The audit trail needs a key with admin:webhooks." : error.message;
      note.hidden = false;
      return;
    }
    note.hidden = true;
    tbody.replaceChildren();
    for (const replay of page.data) {
      const row = document.createElement("tr");
      const status = el("td"); status.append(badge(replay.status));
      const id = el("td"); id.append(el("code", short(replay.id))); id.title = replay.id;
      row.append(id, el("td", replay.kind), el("td", when(replay.created_at)), el("td", replay.requested_by),
        el("td", describe(replay)), el("td", replay.matched), el("td", replay.replayed), status);
      tbody.append(row);
    }
  }
  $("refresh-replays").addEventListener("click", loadReplays);

  // The filter suggests the catalogue's names (free text still works, e.g. for a type not listed yet).
  async function loadEventTypes() {
    let page;
    try { page = await api("GET", "/webhooks/event-types"); } catch { return; }  // only a hint: the filter works without
    const list = $("event-types");
    list.replaceChildren();
    for (const type of page.data) {
      const option = document.createElement("option");
      option.value = type.name;
      option.label = type.description || type.name;
      list.append(option);
    }
  }

  function start() {
    const since = new Date(Date.now() - 24 * 3600 * 1000);
    since.setMinutes(since.getMinutes() - since.getTimezoneOffset());
    if (!$("bulk-since").value) $("bulk-since").value = since.toISOString().slice(0, 16);
    loadDeliveries(false);
    loadReplays();
    loadEventTypes();
  }

  if (signedIn()) start();
})();
