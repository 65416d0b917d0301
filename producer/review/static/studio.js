// The studio's few behaviours: live batch counts, live article attempts, select-all,
// confirmations, filters that apply on change, and the article page's keys, lightbox and
// comparison. Pages work without it.
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
          localClocks(live);
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

  // Moments the server wrote in UTC, shown in the browser's own time.
  function localClocks(root) {
    for (const time of root.querySelectorAll("time[data-local-clock]")) {
      const moment = new Date(time.getAttribute("datetime"));
      if (Number.isNaN(moment.getTime())) continue;
      time.textContent = moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }
  }

  // A contact sheet's card links carry the sheet's filter and order, so that an article
  // page's previous and next walk the same cards.
  function carrySheetQuery(cards) {
    const params = new URLSearchParams(window.location.search);
    params.delete("page");
    const query = params.toString();
    if (!query) return;
    for (const link of cards.querySelectorAll('a[href^="/articles/"]')) {
      const href = link.getAttribute("href");
      if (!href.includes("?")) link.setAttribute("href", `${href}?${query}`);
    }
  }

  // The lightbox: one or more pictures side by side, zoomed together.
  const ZOOMS = [1, 2, 4];
  function makeLightbox(box) {
    const panes = box.querySelector("#lightbox-panes");
    const title = box.querySelector("#lightbox-title");
    const level = box.querySelector("#zoom-level");
    let zoom = 0; // index in ZOOMS; 0 is "fit"

    function setZoom(index) {
      zoom = Math.max(0, Math.min(ZOOMS.length - 1, index));
      box.dataset.zoom = String(ZOOMS[zoom]);
      level.textContent = zoom === 0 ? "fit" : `${ZOOMS[zoom]}×`;
      for (const image of panes.querySelectorAll("img")) {
        image.classList.toggle("zoomed", zoom > 0);
        image.style.width = zoom === 0 ? "" : `${ZOOMS[zoom] * 100}%`;
      }
    }
    function open(pictures, heading) {
      panes.replaceChildren();
      for (const picture of pictures) {
        const pane = document.createElement("figure");
        pane.className = "pane";
        pane.dataset.src = picture.src;
        const frame = document.createElement("div");
        frame.className = "pane-frame";
        const image = document.createElement("img");
        image.src = picture.src;
        image.alt = picture.caption;
        image.addEventListener("click", () => setZoom(zoom === 0 ? 1 : 0));
        frame.appendChild(image);
        frame.addEventListener("scroll", () => {
          for (const other of panes.querySelectorAll(".pane-frame")) {
            if (other === frame) continue;
            other.scrollLeft = frame.scrollLeft;
            other.scrollTop = frame.scrollTop;
          }
        });
        const caption = document.createElement("figcaption");
        caption.textContent = picture.caption;
        pane.append(frame, caption);
        panes.appendChild(pane);
      }
      box.dataset.count = String(pictures.length);
      title.textContent = heading;
      box.hidden = false;
      setZoom(0);
    }
    function close() {
      box.hidden = true;
      panes.replaceChildren();
    }
    box.querySelector("#lightbox-close").addEventListener("click", close);
    for (const button of box.querySelectorAll("[data-zoom]")) {
      button.addEventListener("click", () => {
        const step = Number(button.dataset.zoom);
        setZoom(step === 0 ? 0 : zoom + step);
      });
    }
    box.addEventListener("click", (event) => {
      if (event.target === box || event.target === panes) close();
    });
    return {
      open, close,
      get isOpen() { return !box.hidden; },
      zoomIn() { setZoom(zoom + 1 >= ZOOMS.length ? 0 : zoom + 1); },
      zoomBy(step) { setZoom(step === 0 ? 0 : zoom + step); },
    };
  }

  function picture(element) {
    return { src: element.dataset.full, caption: element.dataset.caption || "" };
  }

  // The article page: attempts and views open large; keys walk the sheet and give verdicts.
  function articlePage(head) {
    const box = document.getElementById("lightbox");
    const lightbox = box ? makeLightbox(box) : null;
    const attempts = () => [...document.querySelectorAll("figure.attempt[data-full]")];
    const chosen = () => attempts().find((f) => f.classList.contains("published"))
      || attempts()[attempts().length - 1];

    function zoomOne(figure) {
      if (lightbox && figure) lightbox.open([picture(figure)], figure.dataset.caption || "");
    }
    function compare(first, second) {
      if (!lightbox || !first || !second || first === second) return;
      lightbox.open([picture(first), picture(second)], "two attempts side by side");
    }
    function compareLatest() {
      const all = attempts();
      if (all.length < 2) return;
      const latest = all[all.length - 1];
      const earlier = all[all.length - 2];
      compare(earlier, latest);
    }
    function views() {
      const shown = [...document.querySelectorAll("figure.product-view[data-full]")];
      if (lightbox && shown.length) lightbox.open(shown.map(picture), "the product's views");
    }
    let comparing = null; // the first attempt picked with "compare with…"

    // Clicks inside the live panel: it is redrawn when a new attempt lands.
    document.addEventListener("click", (event) => {
      const target = event.target instanceof Element ? event.target : null;
      if (!target) return;
      const zoomable = target.closest("figure.attempt a.zoomable, figure.product-view img");
      if (zoomable && lightbox && !event.ctrlKey && !event.metaKey && !event.shiftKey) {
        event.preventDefault();
        zoomOne(zoomable.closest("figure"));
        return;
      }
      const pick = target.closest("button.compare-with");
      if (pick) {
        const figure = pick.closest("figure.attempt");
        if (comparing && comparing !== figure) {
          compare(comparing, figure);
          comparing.classList.remove("comparing");
          comparing = null;
        } else {
          const others = attempts().filter((f) => f !== figure);
          const current = chosen();
          if (others.length === 1 || (current && current !== figure)) {
            compare(figure, current && current !== figure ? current : others[0]);
          }
        }
        return;
      }
      if (target.closest("#compare-latest")) compareLatest();
      if (target.closest("#views-side-by-side")) views();
    });

    const go = (url) => { if (url) window.location.assign(url); };
    const submit = (id) => {
      const form = document.getElementById(id);
      if (form) form.requestSubmit();
    };
    document.addEventListener("keydown", (event) => {
      if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
      const typing = event.target instanceof Element
        && event.target.closest("input, textarea, select, [contenteditable]");
      if (typing) {
        if (event.key === "Escape") event.target.blur();
        return; // keys are text while typing
      }
      const open = lightbox && lightbox.isOpen;
      const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
      const actions = {
        Escape: () => { if (open) lightbox.close(); },
        z: () => (open ? lightbox.zoomIn() : zoomOne(chosen())),
        "+": () => open && lightbox.zoomBy(1),
        "-": () => open && lightbox.zoomBy(-1),
        "0": () => open && lightbox.zoomBy(0),
        c: compareLatest,
        v: views,
        j: () => go(head.dataset.nextUrl),
        ArrowRight: () => go(head.dataset.nextUrl),
        k: () => go(head.dataset.previousUrl),
        ArrowLeft: () => go(head.dataset.previousUrl),
        u: () => go(head.dataset.backUrl),
        a: () => submit("approve-form"),
        r: () => {
          const reason = document.getElementById("reject-reason");
          if (reason) reason.focus();
        },
      };
      const action = actions[key];
      if (!action || (open && (key === "ArrowRight" || key === "ArrowLeft"))) return;
      event.preventDefault();
      action();
    });
    head.dataset.keys = "ready";
  }

  document.addEventListener("DOMContentLoaded", () => {
    localClocks(document);
    const head = document.querySelector("section.article-head[data-article-id]");
    if (head) articlePage(head);
    const cards = document.getElementById("cards");
    if (cards && window.location.pathname.startsWith("/batches/")) carrySheetQuery(cards);
    for (const holder of document.querySelectorAll("[data-poll-url]")) pollBatches(holder);
    for (const live of document.querySelectorAll("[data-state-url]")) pollArticle(live);
    for (const box of document.querySelectorAll("[data-select-all]")) selectAll(box);
    for (const form of document.querySelectorAll("form[data-confirm]")) {
      form.addEventListener("submit", (event) => {
        // A reason typed for a reject is the deliberate step: no second question.
        const reason = form.elements.namedItem("reason");
        if (reason && reason.value.trim()) return;
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    }
    for (const control of document.querySelectorAll("[data-autosubmit]")) {
      control.addEventListener("change", () => control.form.requestSubmit());
    }
  });
})();
