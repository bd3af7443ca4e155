/* The run page: its header, step list and counts follow the run while it is active, and
   the log viewer (filters, paging as you scroll, live tail, links between log lines and
   artifacts). Log lines and the summary arrive as HTML rendered and escaped by the server. */
"use strict";

(() => {
  const summary = document.getElementById("run-summary");
  const viewer = document.getElementById("logs");
  // While the run is queued or running (any other status is an end), the summary is asked
  // for every POLL_MS, and sooner when the live tail brings a line.
  const POLL_MS = 1000;
  const AFTER_LINE_MS = 250;
  const poller = { timer: null, dueAt: 0, inFlight: null };

  function summaryIsActive() {
    const current = summary.querySelector(".run-summary");
    return current !== null && current.dataset.active === "true";
  }

  function refreshSummary() {
    if (!poller.inFlight) {
      poller.inFlight = ibflow.refreshOnce(summary, summary.dataset.refresh, onSummary)
        .finally(() => { poller.inFlight = null; });
    }
    return poller.inFlight;
  }

  function pollIn(delay) {
    const dueAt = Date.now() + delay;
    if (poller.timer !== null && poller.dueAt <= dueAt) return; // an earlier ask is already due
    clearTimeout(poller.timer);
    poller.dueAt = dueAt;
    poller.timer = setTimeout(async () => {
      poller.timer = null;
      await refreshSummary();
      if (summaryIsActive()) pollIn(POLL_MS);
    }, delay);
  }

  function onSummary() {
    showLogCount();
    showStepChoices();
  }

  function showLogCount() {
    const current = summary.querySelector(".run-summary");
    const counter = viewer && viewer.querySelector(".log-count");
    if (!current || !counter) return;
    const count = Number(current.dataset.logCount);
    counter.textContent = count + " record" + (count === 1 ? "" : "s");
  }

  function showStepChoices() {
    // Steps appear once the run starts: the log filter offers each one as it is known.
    const select = viewer && viewer.querySelector("select[name=step]");
    if (!select) return;
    const known = new Set(Array.from(select.options, (option) => option.value));
    summary.querySelectorAll("#steps > li[data-step]").forEach((step) => {
      if (!known.has(step.dataset.step)) select.add(new Option(step.dataset.step, step.dataset.step));
    });
  }

  if (summary && summary.querySelector("[data-waiting]")) {
    // The run is not recorded yet: reload once it is.
    const poll = async () => {
      try {
        const response = await fetch(summary.dataset.refresh);
        if (response.ok) { window.location.reload(); return; }
      } catch (_) { /* try again */ }
      setTimeout(poll, POLL_MS);
    };
    setTimeout(poll, POLL_MS);
  } else if (summary && summaryIsActive()) {
    pollIn(POLL_MS);
  }

  if (!viewer) return;

  const list = viewer.querySelector("#log-list");
  const moreButton = viewer.querySelector("[data-load-more]");
  const statusLine = viewer.querySelector(".log-status");
  const emptyNote = viewer.querySelector(".log-empty");
  const liveIndicator = viewer.querySelector(".live-indicator");
  const controls = {
    level: viewer.querySelector("select[name=level]"),
    step: viewer.querySelector("select[name=step]"),
    q: viewer.querySelector("input[name=q]"),
  };
  const state = {
    nextCursor: viewer.dataset.nextCursor || "",
    lastId: lastLineId(),
    live: viewer.dataset.live === "true",
    loading: null,
    stream: null,
    pending: [],
  };

  function lastLineId() {
    const lines = list.querySelectorAll(".log-line");
    return lines.length ? lines[lines.length - 1].dataset.id : "";
  }

  function filters() {
    return { level: controls.level.value, step: controls.step.value, q: controls.q.value.trim() };
  }

  function query(extra) {
    const params = new URLSearchParams();
    Object.entries({ ...filters(), ...extra }).forEach(([key, value]) => { if (value) params.set(key, value); });
    return params.toString();
  }

  function setStatus(text) { statusLine.textContent = text; }

  function updateControls() {
    moreButton.hidden = !state.nextCursor;
    emptyNote.hidden = list.querySelector(".log-line") !== null;
    const count = list.querySelectorAll(".log-line").length;
    setStatus(count + " line" + (count === 1 ? "" : "s") + " shown" + (state.nextCursor ? " · more below" : ""));
  }

  async function fetchPage(cursor) {
    const response = await fetch(viewer.dataset.linesUrl + "?" + query(cursor ? { cursor } : {}));
    const html = await response.text();
    if (!response.ok) throw new Error(html.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim() || response.statusText);
    return { html, nextCursor: response.headers.get("x-next-cursor") || "", lastId: response.headers.get("x-last-id") || "" };
  }

  function loadMore() {
    if (!state.nextCursor) return Promise.resolve(false);
    if (state.loading) return state.loading;
    setStatus("loading…");
    state.loading = fetchPage(state.nextCursor).then((page) => {
      list.insertAdjacentHTML("beforeend", page.html);
      state.nextCursor = page.nextCursor;
      if (page.lastId) state.lastId = page.lastId;
      updateControls();
      maybeStartLive();
      return true;
    }).catch((err) => { setStatus("could not load more: " + err.message); return false; })
      .finally(() => { state.loading = null; });
    return state.loading;
  }

  async function reload() {
    stopLive();
    history.replaceState(null, "", window.location.pathname + (query({}) ? "?" + query({}) : "") + "#logs");
    setStatus("loading…");
    try {
      const page = await fetchPage("");
      list.innerHTML = page.html;
      state.nextCursor = page.nextCursor;
      state.lastId = page.lastId || lastLineId();
    } catch (err) {
      setStatus("could not load the logs: " + err.message);
      return;
    }
    updateControls();
    maybeStartLive();
  }

  /* --- live tail: once every stored line is shown, new ones stream in ---------------- */

  function maybeStartLive() {
    if (!state.live || state.stream || state.nextCursor) return;
    const source = new EventSource(viewer.dataset.streamUrl + "?" + query(state.lastId ? { after: state.lastId } : {}));
    state.stream = source;
    liveIndicator.hidden = false;
    source.addEventListener("line", (event) => {
      if (summaryIsActive()) pollIn(AFTER_LINE_MS);
      state.pending.push(event.data);
      if (event.lastEventId) state.lastId = event.lastEventId;
      if (state.pending.length === 1) requestAnimationFrame(flushPending);
    });
    source.addEventListener("end", () => {
      state.live = false;
      stopLive();
      pollIn(0); // the run's final state, and on until the summary says it has ended
      setStatus("the run has ended · " + list.querySelectorAll(".log-line").length + " lines shown");
    });
    source.addEventListener("unavailable", (event) => setStatus("live tail interrupted: " + event.data + " — retrying"));
  }

  function flushPending() {
    const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
    const html = state.pending.join("");
    state.pending = [];
    const before = list.lastElementChild;
    list.insertAdjacentHTML("beforeend", html);
    for (let line = before ? before.nextElementSibling : list.firstElementChild; line; line = line.nextElementSibling) {
      line.classList.add("fresh");
    }
    updateControls();
    if (atBottom) window.scrollTo({ top: document.body.scrollHeight });
  }

  function stopLive() {
    if (state.stream) state.stream.close();
    state.stream = null;
    liveIndicator.hidden = true;
  }

  /* --- from an artifact to the log line that mentions it, and back ------------------ */

  function mentionsOf(line) {
    try { return JSON.parse(line.dataset.mentions || "[]"); } catch (_) { return []; }
  }

  async function findLine(keys, step) {
    const wanted = new Set(keys.map((k) => String(k).toLowerCase()));
    document.querySelectorAll(".log-line.highlight").forEach((l) => l.classList.remove("highlight"));
    if (step && controls.step.value !== step && Array.from(controls.step.options).some((o) => o.value === step)) {
      controls.step.value = step;
      controls.q.value = "";
      await reload();
    }
    for (let pages = 0; pages < 200; pages += 1) {
      const found = Array.from(list.querySelectorAll(".log-line"))
        .find((line) => mentionsOf(line).some((k) => wanted.has(String(k).toLowerCase())));
      if (found) {
        found.classList.add("highlight");
        highlightArtifacts(found);
        found.scrollIntoView({ block: "center" });
        setStatus("the highlighted line mentions the artifact");
        return;
      }
      if (!(await loadMore())) break;
    }
    setStatus("no log line" + (step ? " of step " + step : "") + " mentions this artifact");
  }

  function highlightArtifacts(line) {
    document.querySelectorAll(".step-artifacts li.highlight").forEach((li) => li.classList.remove("highlight"));
    const keys = new Set(mentionsOf(line).map((k) => String(k).toLowerCase()));
    document.querySelectorAll(".step-artifacts li").forEach((li) => {
      if (keys.has(li.dataset.artifact.toLowerCase()) || keys.has(li.dataset.key.toLowerCase())) li.classList.add("highlight");
    });
  }

  /* --- wiring --------------------------------------------------------------------- */

  let searchTimer = null;
  controls.level.addEventListener("change", reload);
  controls.step.addEventListener("change", reload);
  controls.q.addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(reload, 300); });
  moreButton.addEventListener("click", loadMore);
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }, { rootMargin: "600px" }).observe(viewer.querySelector(".log-more"));

  document.addEventListener("click", (event) => {
    const toLog = event.target.closest("[data-find-artifact]");
    if (toLog) {
      event.preventDefault();
      const item = toLog.closest("li");
      viewer.scrollIntoView();
      findLine([item.dataset.artifact, item.dataset.key], item.dataset.key.split("/")[0]);
      return;
    }
    const stepLink = event.target.closest("[data-show-step]");
    if (stepLink) {
      event.preventDefault();
      controls.step.value = stepLink.dataset.showStep;
      viewer.scrollIntoView();
      reload();
    }
  });
  list.addEventListener("toggle", (event) => {
    if (event.target.open) highlightArtifacts(event.target);
  }, true);

  updateControls();
  maybeStartLive();
  if (viewer.dataset.findKeys) {
    findLine(JSON.parse(viewer.dataset.findKeys), viewer.dataset.findStep || "");
  }
})();
