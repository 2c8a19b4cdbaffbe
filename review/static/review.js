// captionq review desk: keyboard shortcuts and in-place decisions.
// Plain JavaScript, no dependencies. Every text the server or a model wrote is set with
// textContent, never parsed as HTML. Without this script every form still works.
(function () {
  "use strict";

  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const page = document.body.dataset.page;
  let current = -1;

  function cards() {
    return $$("article.variant").filter((el) => !el.hidden);
  }

  function focusCard(index) {
    const all = cards();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((el, i) => el.classList.toggle("current", i === current));
    all[current].focus({ preventScroll: true });
    all[current].scrollIntoView({ block: "nearest", behavior: "auto" });
  }

  function currentCard() {
    const all = cards();
    return all[current] || null;
  }

  function nextPending(from) {
    const all = cards();
    for (let i = from + 1; i < all.length; i++) {
      if (!all[i].classList.contains("decided")) return i;
    }
    return Math.min(from + 1, all.length - 1);
  }

  function say(message) {
    const box = document.getElementById("status");
    if (!box) return;
    box.textContent = message;
    box.classList.add("shown");
    clearTimeout(say.timer);
    say.timer = setTimeout(() => box.classList.remove("shown"), 2200);
  }

  // Length as the platform counts it, for the edit box (the server checks on save).
  function measure(text, counting) {
    if (counting === "twitter_weighted") {
      let total = 0;
      const light = [[0, 4351], [8192, 8205], [8208, 8223], [8242, 8247]];
      const withoutUrls = text.replace(/https?:\/\/\S+/g, () => { total += 23; return ""; });
      for (const ch of withoutUrls) {
        const cp = ch.codePointAt(0);
        total += light.some(([lo, hi]) => cp >= lo && cp <= hi) ? 1 : 2;
      }
      return total;
    }
    if (counting === "wide_graphemes" && window.Intl && Intl.Segmenter) {
      let total = 0;
      for (const { segment } of new Intl.Segmenter().segment(text)) {
        total += /[\u1100-\u115F\u2E80-\uA4CF\uAC00-\uD7A3\uF900-\uFAFF\uFE30-\uFE4F\uFF00-\uFF60\uFFE0-\uFFE6]/.test(segment) ? 2 : 1;
      }
      return total;
    }
    return text.length; // UTF-16 code units
  }

  function liveCount(area) {
    const out = area.closest("form").querySelector("[data-live-count]");
    if (!out) return;
    const limit = Number(area.dataset.limit);
    const length = measure(area.value, area.dataset.counting);
    out.textContent = length + " / " + limit;
    out.classList.toggle("over", length > limit);
  }

  function showProblem(card, error) {
    const box = card.querySelector("[data-problem]");
    box.replaceChildren();
    const head = document.createElement("p");
    head.textContent = error.message || "That did not work.";
    box.append(head);
    if (Array.isArray(error.detail) && error.detail.length) {
      const list = document.createElement("ul");
      for (const breach of error.detail) {
        const item = document.createElement("li");
        const rule = document.createElement("code");
        rule.textContent = breach.rule;
        item.append(rule, " " + breach.message);
        list.append(item);
      }
      box.append(list);
    }
    box.hidden = false;
  }

  function markDecided(decided) {
    const card = document.getElementById("v-" + decided.variant_id);
    if (!card) return;
    card.dataset.state = decided.state;
    card.className = card.className.replace(/\bstate-\S+/, "state-" + decided.state);
    card.classList.add("decided");
    card.querySelector("[data-state-label]").textContent = decided.state_label;
    card.querySelector("[data-text]").textContent = decided.text;
    const count = card.querySelector(".count");
    if (count) {
      count.textContent = decided.length + " / " + decided.limit;
      count.classList.toggle("over", decided.length > decided.limit);
    }
    const problem = card.querySelector("[data-problem]");
    if (problem) problem.hidden = true;
    $$("details[open]", card).forEach((d) => { d.open = false; });
    const pick = card.querySelector("input.pick");
    if (pick) { pick.checked = false; pick.disabled = true; }
    const counter = document.querySelector("[data-count-variants]");
    if (counter && page === "queue") counter.textContent = Math.max(0, Number(counter.textContent) - 1);
  }

  async function submitDecision(form) {
    const card = form.closest("article.variant");
    let answer;
    try {
      answer = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
    } catch (err) {
      say("The desk could not be reached; nothing was saved.");
      return;
    }
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      const error = body.error || { message: "Refused (" + answer.status + ")" };
      if (card) showProblem(card, error); else say(error.message);
      if (card) { const area = card.querySelector("textarea"); if (area && !area.closest("details").open) focusCard(cards().indexOf(card)); }
      return;
    }
    (body.decided || []).forEach(markDecided);
    const refused = body.refused || [];
    const done = (body.decided || []).length;
    say(done + (done === 1 ? " decision saved" : " decisions saved") + (refused.length ? ", " + refused.length + " refused" : ""));
    updateSelected();
    const index = card ? cards().indexOf(card) : current;
    focusCard(nextPending(index));
  }

  function updateSelected() {
    const n = $$("input.pick:checked").length;
    const out = document.querySelector("[data-selected]");
    if (out) out.textContent = "(" + n + ")";
  }

  function openPanel(card, kind) {
    const panel = card.querySelector("details." + kind);
    if (!panel) return;
    panel.open = true;
    const target = kind === "edit" ? panel.querySelector("textarea") : panel.querySelector("input[type=radio]:checked");
    if (target) {
      target.focus();
      if (target.setSelectionRange) target.setSelectionRange(target.value.length, target.value.length);
    }
  }

  function toggleHelp() {
    const help = document.getElementById("help");
    if (!help) return;
    if (help.open) help.close(); else help.showModal();
  }

  function follow(selector) {
    const link = document.querySelector(selector);
    if (link) window.location.assign(link.href);
  }

  function onKey(event) {
    const typing = event.target.closest("input, textarea, select");
    const card = currentCard();
    if (event.key === "Escape") {
      const open = event.target.closest("details[open]");
      if (open) { open.open = false; const c = open.closest("article.variant"); if (c) focusCard(cards().indexOf(c)); event.preventDefault(); }
      return;
    }
    if (typing && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      const form = event.target.closest("form");
      if (form) { event.preventDefault(); form.requestSubmit(); }
      return;
    }
    const reject = event.target.closest("details.reject[open]");
    if (reject && /^[1-9]$/.test(event.key)) {
      const options = $$("input[type=radio]", reject);
      const choice = options[Number(event.key) - 1];
      if (choice) { choice.checked = true; choice.focus(); event.preventDefault(); }
      return;
    }
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = {
      j: () => focusCard(current + 1), ArrowDown: () => focusCard(current + 1),
      k: () => focusCard(current - 1), ArrowUp: () => focusCard(current - 1),
      a: () => card && card.querySelector("form[data-decide=approve]") && card.querySelector("form[data-decide=approve]").requestSubmit(),
      r: () => card && openPanel(card, "reject"),
      e: () => card && openPanel(card, "edit"),
      x: () => { const pick = card && card.querySelector("input.pick"); if (pick && !pick.disabled) { pick.checked = !pick.checked; updateSelected(); } },
      A: () => { const form = document.querySelector(page === "queue" ? "form#bulk" : "form#approve-job"); if (form) form.requestSubmit(); },
      o: () => { const open = card && card.querySelector("a.open"); if (open) window.location.assign(open.href); },
      u: () => { if (page !== "queue") window.location.assign("/"); },
      n: () => follow("a[data-page=next]"),
      p: () => follow("a[data-page=prev]"),
      "?": toggleHelp,
    };
    const act = actions[event.key];
    if (act) { event.preventDefault(); act(); }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!form.dataset.decide) return;
    if (form.dataset.decide === "bulk" && !$$("input.pick:checked").length) {
      event.preventDefault();
      say("Select variants first: x selects the current one.");
      return;
    }
    event.preventDefault();
    submitDecision(form);
  });
  document.addEventListener("keydown", onKey);
  document.addEventListener("input", (event) => {
    if (event.target.matches("textarea[data-counting]")) liveCount(event.target);
  });
  document.addEventListener("change", (event) => {
    if (event.target.matches("input.pick")) updateSelected();
  });
  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-help]")) toggleHelp();
    const card = event.target.closest("article.variant");
    if (card) { const i = cards().indexOf(card); if (i >= 0 && i !== current) { current = i; cards().forEach((el, n) => el.classList.toggle("current", n === i)); } }
  });

  // Start on the variant named in the address (#v-...), else the first one waiting.
  const named = window.location.hash.startsWith("#v-") && document.getElementById(window.location.hash.slice(1));
  const start = named ? cards().indexOf(named) : cards().findIndex((el) => el.dataset.state === "pending_review");
  if (page === "queue" || page === "job") focusCard(start >= 0 ? start : 0);
})();
