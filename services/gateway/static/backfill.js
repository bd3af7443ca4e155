/* Backfills on the workflows page (a form, and their progress refreshed from the server
   while one runs) and the scorecard page's "score again" button. What is shown comes
   from the server as escaped HTML or is set with textContent. Needs app.js (ibflow). */
"use strict";

(() => {
  function setStatus(element, text, kind) {
    if (!element) return;
    element.textContent = text;
    element.className = "form-status" + (kind ? " " + kind : "");
  }

  function symbolsOf(text) {
    return (text || "").split(/[\s,]+/).map((s) => s.trim().toUpperCase()).filter(Boolean);
  }

  function api(workflow) {
    return "/api/workflows/" + encodeURIComponent(workflow);
  }

  function follow(container) {
    const active = () => container.querySelector("[data-active=true]") !== null;
    ibflow.refreshOnce(container, container.dataset.backfills);
    ibflow.refreshEvery(container, container.dataset.backfills, () => (active() ? 2000 : 15000), () => true);
  }

  async function submit(form) {
    const status = form.querySelector(".form-status");
    const button = form.querySelector("button[type=submit]");
    const symbols = symbolsOf(form.elements.symbols.value);
    const body = {
      start: form.elements.start.value,
      end: form.elements.end.value,
      max_active_runs: Number(form.elements.max_active_runs.value),
    };
    if (symbols.length) body.params = { symbols };
    button.disabled = true;
    setStatus(status, "Planning a run per session from " + body.start + " to " + body.end + "…");
    const result = await ibflow.send("POST", api(form.dataset.workflow) + "/backfills", body, form);
    button.disabled = false;
    if (result.ok && result.data) {
      setStatus(status, "Backfill started: " + result.data.planned + " sessions.", "ok");
      const list = form.closest("section[data-workflow]").querySelector("[data-backfills]");
      if (list) ibflow.refreshOnce(list, list.dataset.backfills);
    } else if (result.status === 401) {
      setStatus(status, "This needs the API token: enter it and try again.", "error");
    } else {
      setStatus(status, "Not started: " + result.message, "error");
    }
  }

  async function cancel(button, container) {
    const workflow = button.closest("section[data-workflow]").dataset.workflow;
    button.disabled = true;
    const result = await ibflow.send("POST", api(workflow) + "/backfills/" + encodeURIComponent(button.dataset.backfillCancel) + "/cancel", {});
    if (!result.ok) window.alert("The backfill was not cancelled: " + result.message);
    ibflow.refreshOnce(container, container.dataset.backfills);
  }

  async function scoreAgain(button) {
    const holder = button.closest("[data-workflow]");
    const status = holder.querySelector(".form-status");
    button.disabled = true;
    setStatus(status, "Requesting a scorecard run…");
    const result = await ibflow.send("POST", api(holder.dataset.workflow) + "/scorecard/runs", {});
    button.disabled = false;
    if (result.ok && result.data) {
      setStatus(status, "Scoring in run " + result.data.execution_id + "; reload when it has ended.", "ok");
    } else {
      setStatus(status, "Not requested: " + result.message, "error");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("form[data-backfill-form]").forEach((form) => {
      form.addEventListener("submit", (event) => { event.preventDefault(); submit(form); });
    });
    document.querySelectorAll("[data-backfills]").forEach((container) => {
      follow(container);
      container.addEventListener("click", (event) => {
        const button = event.target.closest("[data-backfill-cancel]");
        if (button) cancel(button, container);
      });
    });
    document.querySelectorAll("[data-scorecard-refresh]").forEach((button) => {
      button.addEventListener("click", () => scoreAgain(button));
    });
  });
})();
