"use strict";
const $ = (id) => document.getElementById(id);
let current = null;
let currentFile = null; // the file behind `current`, segmented again when "Keep every 3D region" changes
let currentAllParts = false; // the "Keep every 3D region" setting `current` was segmented with
let request = 0; // only the latest upload's answer is shown
let pending = null; // the file of the latest upload while its answer is on its way

let imageError = false; // the error shown is a slice image that did not load

function showError(msg) {
  imageError = false;
  $("error").textContent = msg;
  $("error").hidden = false;
  $("status").textContent = "";
}

// after a failed upload the result on screen is the earlier file's: say so, so it is not taken for this one's
// the server's message as a sentence after the file's name: "upload: too large" -> "too large."
const sentence = (msg) => (msg ? msg.replace(/^upload: /, "").replace(/([^.!?])$/, "$1.") : "");
const stillShown = () => (current && currentFile ? ` The result below is still that of ${currentFile.name}.` : "");
// a re-segmenting of the shown file that failed: the box goes back to the setting of the result shown
function keepBox(file) {
  if (current && file === currentFile && $("all-parts").checked !== currentAllParts) {
    $("all-parts").checked = currentAllParts;
    return ` "Keep every 3D region" is back to ${currentAllParts ? "on" : "off"}, as that result was segmented.`;
  }
  return "";
}
// a volume in mL: a tumor of a few voxels is not shown as 0.00
const millilitres = (ml) => (ml === 0 ? "0 mL" : ml < 0.01 ? "under 0.01 mL" : `${ml.toFixed(2)} mL`);
const count = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// a file's name without its extension (scan.nii.gz -> scan), for the names of its downloads
const stem = (name) => name.replace(/\.nii\.gz$/i, "").replace(/\.[^.]*$/, "") || "upload";

function showSlice(i) {
  const s = current.kind === "volume" ? current.slices[i] : current;
  $("mri").src = s.mri;
  $("mask").src = s.mask;
  $("base").src = s.mri;
  $("over").src = s.overlay;
  const where = current.kind === "volume" ? `slice ${i}` : "the slice";
  const found = s.tumor_area_px ? `tumor of ${s.tumor_area_px} px` : "no tumor";
  $("mri").alt = `MRI (FLAIR), ${where}`;
  $("mask").alt = `predicted tumor mask, ${where}: ${found}`;
  $("over").alt = `predicted tumor in red over the MRI, ${where}: ${found}`;
  if (current.kind === "volume") {
    // the server's axial order, as its notes count: never the file's own, which may run head first
    const dropped = s.dropped_px ? `; ${s.dropped_px} px dropped, outlined in white` : "";
    const order = current.oriented ? "counted from 0 at the most inferior" : "in the file's order (it states no orientation)";
    const text = `slice ${i} of 0-${current.slices.length - 1}, ${order} (tumor ${s.tumor_area_px} px${dropped})`;
    $("slice-label").textContent = text;
    $("slice").setAttribute("aria-valuetext", text);
  }
}

async function upload(file) {
  const mine = ++request;
  pending = file;
  $("error").hidden = true;
  imageError = false;
  $("status").textContent = `Segmenting ${file.name}…`;
  $("result").setAttribute("aria-busy", "true"); // dimmed: what is shown is about to be replaced
  const form = new FormData();
  form.append("file", file);
  const allParts = $("all-parts").checked;
  let res, body;
  try {
    res = await fetch(`/api/v1/segment?all_parts=${allParts}`, { method: "POST", body: form });
    body = await res.json();
  } catch (e) {
    if (mine !== request) return;
    pending = null;
    $("result").removeAttribute("aria-busy");
    return showError(`${file.name}: the server could not be reached or answered with something unreadable.${stillShown()}${keepBox(file)}`);
  }
  if (mine !== request) return; // a later upload or toggle superseded this one
  pending = null;
  $("result").removeAttribute("aria-busy");
  // the box toggled on the volume shown: stay on the slice shown now (the slider may have moved meanwhile)
  const at = current && current.kind === "volume" && file === currentFile ? Number($("slice").value) : null;
  if (!res.ok) return showError(`${file.name}: ${sentence(body.error) || `the server answered ${res.status}.`}${stillShown()}${keepBox(file)}`);
  current = body;
  currentFile = file;
  currentAllParts = allParts;
  $("result").hidden = false;
  $("result-file").textContent = `Result for ${file.name}`;
  const notes = body.notes || [];
  $("notes").replaceChildren(...notes.map((n) => Object.assign(document.createElement("li"), { textContent: n })));
  $("notes").hidden = notes.length === 0;
  if (body.kind === "volume") {
    $("slice-controls").hidden = false;
    $("slice").max = body.slices.length - 1;
    const best = body.slices.reduce((b, s, i, a) => (s.tumor_area_px > a[b].tumor_area_px ? i : b), 0);
    const shown = at !== null && at < body.slices.length ? at : best; // a re-segmented volume stays on its slice
    $("slice").value = shown;
    showSlice(shown);
    $("measure").textContent = `Tumor volume: ${millilitres(body.tumor_volume_ml)} in ${count(body.slices_with_tumor.length, "slice")}`;
    $("download").href = body.mask_url;
    $("download").download = `${stem(file.name)}_pred.nii.gz`;
  } else {
    $("slice-controls").hidden = true;
    showSlice(0);
    $("measure").textContent = `Tumor area: ${body.tumor_area_px} px`;
    $("download").href = body.mask;
    $("download").download = `${stem(file.name)}_pred.png`;
  }
  // said to a screen reader too: the result, not only that it is done
  $("status").textContent = `Done in ${Math.round(body.runtime_ms)} ms. ${$("measure").textContent}.`;
}

$("file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  e.target.value = ""; // choosing the same file again is a change too, and segments it again
  if (file) upload(file);
});
$("all-parts").addEventListener("change", () => {
  if (pending) upload(pending); // the answer on its way was asked with the other setting
  else if (current && current.kind === "volume" && currentFile) upload(currentFile);
});
$("opacity").addEventListener("input", (e) => ($("over").style.opacity = e.target.value / 100));
$("slice").addEventListener("input", (e) => showSlice(Number(e.target.value)));
const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
drop.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); });
// a file dropped beside the zone would make the browser open it and leave the page and its result
["dragover", "drop"].forEach((t) => window.addEventListener(t, (e) => e.preventDefault()));
$("over").style.opacity = 0.5;
// a volume's slice images are fetched as the slider moves; the server keeps them for an hour
const IMAGES = ["mri", "mask", "base", "over"];
IMAGES.forEach((id) => {
  $(id).addEventListener("error", () => {
    if (!(current && current.kind === "volume" && $(id).getAttribute("src"))) return;
    showError("This slice's images could not be loaded. The server keeps a volume's images for an hour: "
      + "if that has passed, choose the file again.");
    imageError = true;
  });
  $(id).addEventListener("load", () => {
    if (imageError && IMAGES.every((k) => $(k).complete && $(k).naturalWidth)) {
      imageError = false;
      $("error").hidden = true;
    }
  });
});

// which model answers, and for the shipped one its license (non-commercial) and its model card
fetch("/api/v1/model").then((r) => (r.ok ? r.json() : null)).then((m) => {
  if (!m) return;
  const info = $("model-info");
  info.append(`Model: ${m.model} (tumorseg ${m.version}; input: ${m.channels.join(", ")}). `);
  if (m.shipped) {
    info.append(`Its weights are ${m.license} use only. `);
    const card = document.createElement("a");
    card.href = m.model_card;
    card.textContent = "Model card";
    info.append(card, ": its data, results and failure modes.");
  } else {
    info.append("Not the shipped model: its data, results and license are those of whoever trained it.");
  }
  info.hidden = false;
}).catch(() => {});
