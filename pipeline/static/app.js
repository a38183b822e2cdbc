// The search page: an uploaded image or a URL to POST /api/search, the matches drawn as cards.
"use strict";

const form = document.getElementById("search");
const fileInput = document.getElementById("file");
const urlInput = document.getElementById("url");
const drop = document.getElementById("drop");
const preview = document.getElementById("preview");
const message = document.getElementById("message");
const results = document.getElementById("results");
const button = document.getElementById("go");
let chosen = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// Only http(s) URLs become links or image sources: a wiki's `server` could say "javascript:".
function safeUrl(value) {
  if (!value) return null;  // no URL (a file without a thumbnail): new URL(null) is ".../null"
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch (err) {
    return null;
  }
}

function link(href, text, attrs = {}) {
  const safe = safeUrl(href);
  return safe ? el("a", { ...attrs, href: safe }, text) : text;
}

function say(text, isError) {
  message.textContent = text;
  message.className = "message" + (isError ? " error" : "");
  message.hidden = !text;
}

function choose(file) {
  chosen = file;
  urlInput.value = "";
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  search();
}

fileInput.addEventListener("change", () => { if (fileInput.files[0]) choose(fileInput.files[0]); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) choose(e.dataTransfer.files[0]);
});
// The browser refuses an invalid URL without a submit: the last answer's message must go too.
urlInput.addEventListener("invalid", () => { say("", false); results.replaceChildren(); });
form.addEventListener("submit", (e) => {
  e.preventDefault();
  if (urlInput.value.trim()) { chosen = null; preview.hidden = true; }
  search();
});

async function search() {
  const body = new FormData();
  if (chosen) body.append("image", chosen);
  else if (urlInput.value.trim()) body.append("url", urlInput.value.trim());
  else { say("Pick an image or paste its URL.", true); return; }
  const radius = document.getElementById("radius").value;
  const nearest = document.getElementById("nearest").value;
  if (nearest) body.append("nearest", nearest); else if (radius) body.append("max_distance", radius);
  button.disabled = true;
  say("Searching…", false);
  results.replaceChildren();
  try {
    const response = await fetch("/api/search", { method: "POST", body });
    const answer = await response.json();
    if (!response.ok) { say(answer.error || `error ${response.status}`, true); return; }
    say(answer.note || "", false);
    show(answer);
  } catch (err) {
    say("The server could not be reached.", true);
  } finally {
    button.disabled = false;
  }
}

function show(answer) {
  const n = answer.matches.length;
  const files = `file${n === 1 ? "" : "s"}`;
  results.append(el("p", { class: "summary", id: "summary" },
    answer.nearest ? (n ? `The ${n} nearest ${files} to hash ${answer.hash}`
                        : `No image in the index yet.`)
      : n ? `${n} ${files} within ${answer.max_distance} bits of hash ${answer.hash}`
        : `No image within ${answer.max_distance} bits of hash ${answer.hash}.`));
  for (const match of answer.matches) {
    const thumb = el("img", { class: "thumb", alt: match.title, loading: "lazy" });
    if (safeUrl(match.thumb_url)) thumb.src = safeUrl(match.thumb_url);
    // A low-information hash (flat, stripes) is shared by unrelated images: never "same".
    const same = match.distance === 0 && !match.low_information;
    const bits = `${match.distance} bit${match.distance === 1 ? "" : "s"}`;
    const badge = el("span", { class: "distance" + (same ? " exact" : "") },
      same ? "same hash" : match.low_information ? `${bits} · low-information hash` : bits);
    const title = match.file_url ? link(match.file_url, match.title) : match.title;
    const list = el("ul", { class: "articles" });
    for (const article of match.articles) {
      list.append(el("li", {}, link(article.url, article.title, { class: "article" })));
    }
    const body = el("div", {}, el("h2", {}, title, badge));
    // Exact duplicates (same bytes, or same hash and size) are one result: name them all.
    const dups = match.duplicates || [];
    if (dups.length) {
      const also = el("p", { class: "muted duplicates" }, "Also uploaded as ");
      dups.forEach((d, i) => {
        also.append(i ? ", " : "", d.file_url ? link(d.file_url, d.title) : d.title);
      });
      body.append(also);
    }
    body.append(match.articles.length ? list : el("p", { class: "muted" }, "No article uses it."));
    if (match.variant !== "original") {
      body.append(el("p", { class: "muted" }, `found as the query's ${match.variant} variant`));
    }
    results.append(el("article", { class: "match" }, thumb, body));
  }
}

fetch("/api/stats").then((r) => r.json()).then((s) => {
  if (s.error) return;
  const wiki = s.wiki ? ` from ${s.wiki}` : "";
  document.getElementById("stats").textContent =
    `${s.hashed.toLocaleString()} images in ${s.articles.toLocaleString()} articles${wiki}`;
}).catch(() => {});

// Near-duplicate clusters (GET /api/duplicates), fetched the first time the section is opened.
document.getElementById("duplicates").addEventListener("toggle", (event) => {
  const box = document.getElementById("clusters");
  if (!event.target.open || box.dataset.loaded) return;
  box.dataset.loaded = "1";
  box.textContent = "Computing clusters…";
  fetch("/api/duplicates?limit=20").then((r) => r.json()).then((d) => {
    box.textContent = "";
    if (d.error) { box.textContent = d.error; return; }
    if (!d.clusters.length) { box.textContent = "No near-duplicate clusters."; return; }
    for (const cluster of d.clusters) {
      const list = el("ul", { class: "articles" });
      for (const f of cluster.files) {
        const used = f.article_count ? ` · used by ${f.article_count} article(s): ${f.articles.join(", ")}` : "";
        list.append(el("li", {}, `${f.title} · ${f.repo || "-"} · ${f.hash}${used}`));
      }
      box.append(el("article", { class: "match" }, el("div", {},
        el("h2", {}, `${cluster.size} files`), list)));
    }
  }).catch(() => { box.textContent = "The clusters could not be fetched."; });
});
