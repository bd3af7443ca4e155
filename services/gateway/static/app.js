/* ibflow pages: health dot, API calls with the bearer token, trigger and schedule forms,
   refreshing fragments. Everything shown comes from the server as escaped HTML or is set
   with textContent: nothing here turns data into markup. */
"use strict";

const ibflow = (() => {
  const TOKEN_KEY = "ibflow.apiToken";
  const tokenRequired = document.body.dataset.tokenRequired === "true";

  function storedToken() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function rememberToken(token) {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  function showTokenFields() {
    document.querySelectorAll(".token-field").forEach((field) => { field.hidden = false; });
  }

  function tokenFrom(form) {
    const input = form && form.querySelector("input[name=token]");
    if (input && input.value.trim()) {
      rememberToken(input.value.trim());
      input.value = "";
      input.closest(".token-field").hidden = true;
    }
    let token = storedToken();
    if (!token && tokenRequired && !form) {
      token = (window.prompt("This action needs the API token (IBFLOW_API_TOKEN):") || "").trim();
      rememberToken(token);
    }
    return token;
  }

  async function send(method, url, body, form) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = tokenFrom(form);
    if (token) headers.Authorization = "Bearer " + token;
    let response;
    try {
      response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      return { ok: false, status: 0, message: "the gateway did not answer (" + err.message + ")" };
    }
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON */ }
    if (response.status === 401) {
      rememberToken("");
      showTokenFields();
    }
    const message = data && typeof data.error === "string" ? data.error : response.statusText;
    return { ok: response.ok, status: response.status, data, message };
  }

  function setStatus(element, text, kind) {
    if (!element) return;
    element.textContent = text;
    element.className = "form-status" + (kind ? " " + kind : "");
  }

  function parseSymbols(text) {
    return (text || "").split(/[\s,]+/).map((s) => s.trim().toUpperCase()).filter(Boolean);
  }

  async function triggerRun(form) {
    const status = form.querySelector(".form-status");
    const workflow = form.dataset.workflow || form.querySelector("[name=workflow_id]").value;
    const symbols = parseSymbols(form.querySelector("[name=symbols]").value);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    setStatus(status, "Requesting a run of " + workflow + "…");
    const body = symbols.length ? { params: { symbols } } : {};
    const result = await send("POST", "/api/workflows/" + encodeURIComponent(workflow) + "/runs", body, form);
    button.disabled = false;
    if (result.ok && result.data && result.data.execution_id) {
      setStatus(status, "Run " + result.data.execution_id + " requested — opening it…", "ok");
      window.location.href = "/runs/" + encodeURIComponent(result.data.execution_id);
    } else if (result.status === 401) {
      setStatus(status, "This needs the API token: enter it and try again.", "error");
    } else {
      setStatus(status, "Not started: " + result.message, "error");
    }
  }

  async function scheduleAction(button) {
    const workflow = button.closest("[data-workflow]").dataset.workflow;
    button.disabled = true;
    const result = await send("POST", "/api/workflows/" + encodeURIComponent(workflow) + "/" + button.dataset.scheduleAction);
    button.disabled = false;
    if (result.ok) window.location.reload();
    else window.alert("The schedule was not changed: " + result.message);
  }

  async function saveSchedule(form) {
    const workflow = form.closest("[data-workflow]").dataset.workflow;
    const status = form.querySelector(".form-status");
    const body = { cron: form.elements.cron.value.trim(), timezone: form.elements.timezone.value.trim() };
    setStatus(status, "Saving…");
    const result = await send("PATCH", "/api/workflows/" + encodeURIComponent(workflow) + "/schedule", body);
    if (result.ok) window.location.reload();
    else setStatus(status, "Not saved: " + result.message, "error");
  }

  /* Replace a container's HTML with a server-rendered fragment, every `delay` ms. */
  function refreshEvery(container, url, delay, shouldGoOn, onUpdate) {
    let timer = null;
    async function tick() {
      await refreshOnce(container, url, onUpdate);
      if (shouldGoOn()) timer = setTimeout(tick, delay());
    }
    timer = setTimeout(tick, delay());
    return () => clearTimeout(timer);
  }

  async function refreshOnce(container, url, onUpdate) {
    try {
      const response = await fetch(url, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const html = await response.text();
      if (html !== container.dataset.lastHtml) {
        container.innerHTML = html;
        container.dataset.lastHtml = html;
        if (onUpdate) onUpdate();
      }
    } catch (_) { /* keep the last view; try again */ }
  }

  /* A data table wider than its card scrolls sideways: its frame shades the side with more. */
  function shadeSideways(frame) {
    const wrap = frame.querySelector(":scope > .table-wrap");
    if (!wrap) return;
    const update = () => {
      frame.classList.toggle("more-left", wrap.scrollLeft > 1);
      frame.classList.toggle("more-right", wrap.scrollWidth - wrap.clientWidth - wrap.scrollLeft > 1);
    };
    wrap.addEventListener("scroll", update, { passive: true });
    if (window.ResizeObserver) new ResizeObserver(update).observe(wrap);
    update();
  }

  async function loadInto(container) {
    if (container.dataset.loaded) return;
    container.dataset.loaded = "1";
    try {
      const response = await fetch(container.dataset.src, { headers: { Accept: "text/html" } });
      container.innerHTML = await response.text();
    } catch (err) {
      container.textContent = "Could not load: " + err.message;
      delete container.dataset.loaded;
    }
  }

  async function showHealth() {
    const indicator = document.getElementById("health-indicator");
    if (!indicator) return;
    try {
      const response = await fetch("/health", { headers: { Accept: "application/json" } });
      const report = await response.json();
      indicator.className = "health health-" + report.status;
      indicator.querySelector(".health-label").textContent = report.status;
      const troubled = Object.entries(report.components || {})
        .filter(([, c]) => c.status !== "ok")
        .map(([name, c]) => name + ": " + c.status + (c.error ? " (" + c.error + ")" : ""));
      indicator.title = troubled.length ? troubled.join("\n") : "every component is ok";
    } catch (_) {
      indicator.className = "health health-unhealthy";
    }
  }

  function init() {
    if (tokenRequired && !storedToken()) showTokenFields();
    document.querySelectorAll("form[data-trigger]").forEach((form) => {
      form.addEventListener("submit", (event) => { event.preventDefault(); triggerRun(form); });
    });
    document.querySelectorAll("[data-schedule-action]").forEach((button) => {
      button.addEventListener("click", () => scheduleAction(button));
    });
    document.querySelectorAll("form[data-schedule-form]").forEach((form) => {
      form.addEventListener("submit", (event) => { event.preventDefault(); saveSchedule(form); });
    });
    document.querySelectorAll("details.execution").forEach((details) => {
      const body = details.querySelector(".execution-body");
      if (details.open) loadInto(body);
      details.addEventListener("toggle", () => { if (details.open) loadInto(body); });
    });
    document.querySelectorAll("[data-tree]").forEach((button) => {
      button.addEventListener("click", () => {
        const open = button.dataset.tree === "open";
        button.closest(".card").querySelectorAll("details.jt-node").forEach((node) => { node.open = open; });
      });
    });
    document.querySelectorAll(".table-frame").forEach(shadeSideways);
    const runsTable = document.getElementById("runs-table");
    if (runsTable) {
      const active = () => runsTable.querySelector("[data-active=true]") !== null;
      refreshEvery(runsTable, runsTable.dataset.refresh, () => (active() ? 2000 : 10000), () => true);
    }
    showHealth();
    setInterval(showHealth, 30000);
  }

  document.addEventListener("DOMContentLoaded", init);
  return { send, refreshEvery, refreshOnce };
})();
