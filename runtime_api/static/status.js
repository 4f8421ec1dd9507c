// The status page: polls the service's JSON (GET /health, /status/...) and renders it.
// Every value goes into the page as text (textContent), never as markup: function output is untrusted.
"use strict";

(() => {
  const POLL_MS = 2000; // between the end of one refresh and the start of the next
  const MAX_DELAY_MS = 15000; // back-off while the service does not answer
  const HIDDEN_MS = 10000; // while the tab is hidden
  const INVOCATIONS = 50;
  const LOG_LINES = 500; // per request
  const LOG_KEEP = 1000; // lines kept in the page
  const PLATFORM = /^(START|END|REPORT) RequestId: /;

  let cursor = null; // the last log line received (`next` of /status/logs)
  let failures = 0;

  const $ = (id) => document.getElementById(id);

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  // A table row; `classes` by column index (e.g. {3: "num"}).
  function row(cells, classes = {}) {
    const tr = document.createElement("tr");
    cells.forEach((cell, index) => {
      const td = document.createElement("td");
      if (cell instanceof Node) td.append(cell);
      else td.textContent = cell === null || cell === undefined ? "" : String(cell);
      if (classes[index]) td.className = classes[index];
      tr.append(td);
    });
    return tr;
  }

  function fill(tableId, rows, empty) {
    const body = $(tableId).tBodies[0];
    if (rows.length === 0) {
      const td = el("td", empty, "empty");
      td.colSpan = $(tableId).tHead.rows[0].cells.length;
      const tr = document.createElement("tr");
      tr.append(td);
      body.replaceChildren(tr);
    } else {
      body.replaceChildren(...rows);
    }
  }

  function pad(n, width = 2) {
    return String(n).padStart(width, "0");
  }

  function clock(iso) {
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return iso;
    return `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}.${pad(at.getMilliseconds(), 3)}`;
  }

  function seconds(value) {
    if (value < 60) return `${value.toFixed(0)} s`;
    if (value < 3600) return `${Math.floor(value / 60)} min ${Math.floor(value % 60)} s`;
    return `${Math.floor(value / 3600)} h ${Math.floor((value % 3600) / 60)} min`;
  }

  function ms(value) {
    return value === null || value === undefined ? "—" : `${value.toFixed(2)} ms`;
  }

  function badge(text, kind) {
    return el("span", text, `badge ${kind}`);
  }

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // -- sections ---------------------------------------------------------------------------------

  function renderHealth(health) {
    $("version").textContent = `version ${health.version}`;
    const pools = health.pools || {};
    const environments = pools.environments || {};
    const sessions = health.sessions || {};
    const events = health.events || {};
    const cards = [
      ["Functions", health.functions],
      ["Environments", `${environments.live ?? "?"} of ${environments.limit ?? "?"}`],
      ["Sessions", `${sessions.active ?? 0} of ${sessions.limit ?? 0}`],
      ["Events pending", events.pending ?? 0],
      ["Isolation", health.isolation],
    ];
    $("overview").replaceChildren(
      ...cards.map(([label, value]) => {
        const card = el("div", null, "card");
        card.append(el("div", label, "label"), el("div", value, "value"));
        return card;
      }),
    );
  }

  function environmentChips(states) {
    const names = Object.keys(states).sort();
    if (names.length === 0) return el("span", "none", "muted");
    const chips = el("span", null, "chips");
    for (const name of names) chips.append(badge(`${name} ${states[name]}`, `env-${name}`));
    return chips;
  }

  function renderFunctions(data) {
    const rows = data.functions.map((f) => {
      const state = el("span", null);
      state.append(badge(f.state, f.state === "Active" ? "success" : f.state === "Failed" ? "error" : "neutral"));
      if (f.state_reason) state.append(el("div", f.state_reason, "reason"));
      return row(
        [
          el("span", f.name, "name"),
          f.version,
          f.runtime || f.package_type,
          `${f.memory_size} MB`,
          `${f.timeout} s`,
          state,
          environmentChips(f.environments),
          f.queued,
          f.cold_starts,
        ],
        { 3: "num", 4: "num", 7: "num", 8: "num" },
      );
    });
    fill("functions", rows, "No functions.");
  }

  const OUTCOMES = {
    success: ["success", "success"],
    error: ["error", "error"],
    timeout: ["timeout", "warning"],
    throttled: ["throttled", "neutral"],
    service_error: ["service error", "error"],
  };

  function renderInvocations(data) {
    const rows = data.invocations.map((i) => {
      const [label, kind] = OUTCOMES[i.outcome] || [i.outcome, "neutral"];
      const outcome = el("span", null);
      outcome.append(badge(label, kind));
      if (i.error_type) outcome.append(el("span", ` ${i.error_type}`, "error-type"));
      if (i.init_duration_ms !== null) outcome.append(el("span", " cold", "muted"));
      const start = el("span", clock(i.start_time));
      start.title = i.start_time;
      const cells = [start, i.function, el("code", i.request_id), ms(i.duration_ms), outcome, i.error_message];
      return row(cells, { 1: "nowrap", 3: "num", 5: "message" });
    });
    fill("invocations", rows, "No invocations yet.");
  }

  function renderSessions(data) {
    const summary = data.available
      ? `${data.sessions.length} of ${data.limit} live`
      : `sessions are not available: ${data.problem}`;
    $("sessions-summary").textContent = summary;
    const rows = data.sessions.map((s) => {
      const state = badge(s.state, s.state === "busy" ? "warning" : "success");
      const cells = [el("code", s.id_sha256), state, seconds(s.age_seconds), seconds(s.idle_seconds), s.executions];
      return row(cells, { 2: "num", 3: "num", 4: "num" });
    });
    fill("sessions", rows, "No live sessions.");
  }

  function logLine(line) {
    const div = el("div", null, PLATFORM.test(line.text) ? "line platform" : "line");
    const at = el("span", clock(line.time), "time");
    at.title = line.time;
    // A runtime writes a multi-line record (a stack trace) with \r between its lines: shown as lines.
    div.append(at, el("span", line.function, "fn"), el("span", line.text.replaceAll("\r", "\n"), "text"));
    if (line.truncated > 0) div.append(el("span", ` … (${line.truncated} more characters)`, "muted"));
    if (line.request_id) div.title = `RequestId: ${line.request_id}`;
    return div;
  }

  function appendLogs(data) {
    const log = $("log");
    const following = log.scrollHeight - log.scrollTop - log.clientHeight < 8;
    const added = [];
    if (data.skipped > 0) added.push(el("div", `… ${data.skipped} lines not shown`, "line gap"));
    for (const line of data.lines) added.push(logLine(line));
    log.append(...added);
    while (log.childElementCount > LOG_KEEP) log.firstElementChild.remove();
    if (following && added.length > 0) log.scrollTop = log.scrollHeight;
    cursor = data.next;
    $("log-status").textContent = `${data.capacity} lines kept by the service`;
  }

  // -- refreshing -------------------------------------------------------------------------------

  function logsPath() {
    return cursor === null ? `status/logs?limit=${LOG_LINES}` : `status/logs?after=${cursor}&limit=${LOG_LINES}`;
  }

  const SECTIONS = [
    [() => "health", renderHealth],
    [() => "status/functions", renderFunctions],
    [() => `status/invocations?limit=${INVOCATIONS}`, renderInvocations],
    [() => "status/sessions", renderSessions],
    [logsPath, appendLogs, () => !$("pause").checked],
  ];

  async function refresh() {
    const wanted = SECTIONS.filter(([, , enabled]) => !enabled || enabled());
    const results = await Promise.allSettled(wanted.map(([path]) => getJSON(path())));
    const problems = [];
    results.forEach((result, index) => {
      if (result.status === "fulfilled") {
        try {
          wanted[index][1](result.value);
        } catch (error) {
          problems.push(String(error));
        }
      } else {
        problems.push(String(result.reason));
      }
    });
    const connection = $("connection");
    if (problems.length === 0) {
      failures = 0;
      connection.textContent = "live";
      connection.className = "connection live";
      connection.title = "";
      $("updated").textContent = `updated ${clock(new Date().toISOString())}`;
    } else {
      failures += 1;
      connection.textContent = "not answering: retrying";
      connection.className = "connection down";
      connection.title = problems.join("\n");
    }
  }

  function delay() {
    if (document.hidden) return HIDDEN_MS;
    return failures === 0 ? POLL_MS : Math.min(MAX_DELAY_MS, POLL_MS * 2 ** Math.min(failures, 4));
  }

  function loop() {
    refresh().finally(() => setTimeout(loop, delay()));
  }

  loop();
})();
