// The studio's few behaviours: live batch counts, live article attempts, select-all,
// confirmations and filters that apply on change. Pages work without it.
"use strict";

(() => {
  async function fetchText(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok || response.redirected) throw new Error(`${url}: ${response.status}`);
    return response.text();
  }

  // The batches table: refetched while batches run (seconds from the fragment itself).
  function pollBatches(holder) {
    const next = () => {
      const live = holder.querySelector("[data-poll-seconds]");
      const seconds = Number(live ? live.dataset.pollSeconds : 30) || 30;
      window.setTimeout(refresh, seconds * 1000);
    };
    async function refresh() {
      try {
        const html = await fetchText(holder.dataset.pollUrl);
        if (html !== holder.innerHTML) holder.innerHTML = html;
        holder.dataset.refreshed = String(Date.now());
      } catch (error) {
        return; // logged out or the server went away: stop asking
      }
      next();
    }
    next();
  }

  // An article: its state is polled; when it changed, the status and attempts are redrawn.
  function pollArticle(live) {
    const seconds = Number(live.dataset.pollSeconds) || 2;
    async function check() {
      try {
        const response = await fetch(live.dataset.stateUrl, {
          credentials: "same-origin", cache: "no-store",
        });
        if (!response.ok) return;
        const state = await response.json();
        if (state.version !== live.dataset.version) {
          live.innerHTML = await fetchText(live.dataset.liveUrl);
          live.dataset.version = state.version;
          live.dataset.updates = String(Number(live.dataset.updates || 0) + 1);
        }
      } catch (error) {
        return;
      }
      window.setTimeout(check, seconds * 1000);
    }
    window.setTimeout(check, seconds * 1000);
  }

  function selectAll(box) {
    const form = box.form;
    box.addEventListener("change", () => {
      const picks = document.querySelectorAll(`input[name="article"][form="${form.id}"]`);
      for (const pick of picks) pick.checked = box.checked;
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const holder of document.querySelectorAll("[data-poll-url]")) pollBatches(holder);
    for (const live of document.querySelectorAll("[data-state-url]")) pollArticle(live);
    for (const box of document.querySelectorAll("[data-select-all]")) selectAll(box);
    for (const form of document.querySelectorAll("form[data-confirm]")) {
      form.addEventListener("submit", (event) => {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    }
    for (const control of document.querySelectorAll("[data-autosubmit]")) {
      control.addEventListener("change", () => control.form.requestSubmit());
    }
  });
})();
