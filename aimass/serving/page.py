"""The model server's page for people (`GET /`): the served model's card, a drop zone that classifies an image, and
the monitor's drift window and live accuracy (`/v2/models/{name}/monitor`) as bars.

One self-contained HTML document: no build step and nothing fetched from elsewhere (the server is offline on a
cluster too). The page embeds no model data; its script reads `/v2/models/{name}` and sends the dropped image to
`/v2/models/{name}/infer` as the BYTES input `image`, exactly as any client does, with the bearer token when the
server asks for one (kept in the page's memory only).
"""
from __future__ import annotations

import html
import json

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 52em; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; margin: 1em 0; }
#drop.over { background: #eef; }
#preview { max-width: 12em; max-height: 12em; display: block; margin: 0.5em auto; }
.bar { background: #4a7; height: 0.8em; }
.bar.over { background: #c44; }
.error { color: #b00; }
#auth { display: none; }
</style></head>
<body>
<h1>__TITLE__</h1>
<p id="status">Loading the model's card...</p>
<table id="card"></table>
<form id="auth"><label>This server needs a bearer token: <input id="token" type="password" autocomplete="off"></label>
<button>Use it</button></form>
<div id="drop"><p>Drop an image here, or <label><u>pick a file</u>
<input id="file" type="file" accept="image/*" hidden></label>.</p></div>
<table id="answer"></table>
<h2>Monitoring</h2>
<p id="monitor-status">No traffic measured yet.</p>
<table id="drift"></table>
<table id="mix"></table>
<script>
"use strict";
const MODEL = __MODEL__;
let token = "";
let classes = 1;

function headers(extra) {
  return Object.assign(token ? {"Authorization": "Bearer " + token} : {}, extra || {});
}

function row(table, cells, header) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement(header ? "th" : "td");
    if (cell instanceof Node) { td.appendChild(cell); } else { td.textContent = cell; }
    tr.appendChild(td);
  }
  table.appendChild(tr);
}

function figure(value) {  // a figure of the model card's evaluation, or why there is none
  return value == null ? "not recorded (registered before it was measured)" : value.toFixed(4);
}

function say(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

async function loadCard() {
  const response = await fetch("/v2/models/" + MODEL, {headers: headers()});
  if (response.status === 401) {
    document.getElementById("auth").style.display = "block";
    say("Enter the bearer token to see the model.", true);
    return;
  }
  const body = await response.json();
  if (!response.ok) { say(body.error || ("HTTP " + response.status), true); return; }
  const p = body.parameters, card = document.getElementById("card");
  card.replaceChildren();
  classes = p.class_names.length;
  const lineage = p.lineage || {};
  const rows = [["model", body.name + " " + body.versions[0]],
                ["release revision", p.release_revision === null ? "none (served as pinned)" : p.release_revision],
                ["data set", p.dataset || "unknown"],
                ["classes", classes + ": " + p.class_names.join(", ")],
                ["input", body.inputs.map(i => i.name + " " + i.datatype + " " + JSON.stringify(i.shape)).join("; ")],
                ["validation accuracy (" + (p.validation_accuracy_of || "unknown") + ")",
                 p.validation_accuracy == null ? "unknown" : p.validation_accuracy.toFixed(4)],
                ["compression", p.compression || "none"],
                ["test accuracy (the gate's)", figure((p.evaluation || {}).accuracy)],
                ["test accuracy under corruptions", figure((p.evaluation || {}).corruption_accuracy)],
                ["calibration error (ECE)", figure((p.evaluation || {}).calibration_error)],
                ["data version", lineage.data_md5 || "unknown"],
                ["git commit", lineage.git_commit || "unknown"],
                ["pipeline run", lineage.run_name || "unknown"]];
  for (const [name, value] of rows) { row(card, [name, String(value)]); }
  say("Serving " + body.name + " " + body.versions[0] + ".");
}

function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function classify(file) {
  let preview = document.getElementById("preview");
  if (!preview) {
    preview = document.createElement("img");
    preview.id = "preview";
    preview.alt = "the image sent";
    document.getElementById("drop").appendChild(preview);
  }
  preview.src = URL.createObjectURL(file);
  say("Classifying " + file.name + "...");
  const k = Math.min(5, classes);
  const request = {inputs: [{name: "image", shape: [1], datatype: "BYTES", data: [await base64Of(file)]}],
                   parameters: {top_k: k}};
  const response = await fetch("/v2/models/" + MODEL + "/infer",
                               {method: "POST", headers: headers({"Content-Type": "application/json"}),
                                body: JSON.stringify(request)});
  const body = await response.json();
  const answer = document.getElementById("answer");
  answer.replaceChildren();
  if (!response.ok) { say(file.name + ": " + (body.error || ("HTTP " + response.status)), true); return; }
  const outputs = Object.fromEntries(body.outputs.map(o => [o.name, o.data]));
  row(answer, ["class", "probability", ""], true);
  outputs.top_k_labels.forEach((label, i) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * outputs.top_k_probabilities[i]).toFixed(1) + "%";
    row(answer, [label, (100 * outputs.top_k_probabilities[i]).toFixed(1) + "%", bar]);
  });
  say(file.name + ": " + outputs.label[0] + " (" + body.model_name + " " + body.model_version + ")");
}

const drop = document.getElementById("drop");
drop.addEventListener("dragover", event => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", event => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) { classify(event.dataTransfer.files[0]); }
});
document.getElementById("file").addEventListener("change", event => {
  if (event.target.files.length) { classify(event.target.files[0]); }
});
function bar(share, over) {
  const div = document.createElement("div");
  div.className = over ? "bar over" : "bar";
  div.style.width = Math.max(1, Math.min(100, 100 * share)) + "%";
  return div;
}

// The server's drift window and live accuracy (GET /v2/models/NAME/monitor): each statistic's distance as a bar
// against its threshold (full width = the threshold), and the class mix the model answered.
async function loadMonitor() {
  const response = await fetch("/v2/models/" + MODEL + "/monitor", {headers: headers()});
  if (!response.ok) { return; }
  const view = await response.json();
  const accuracy = view.feedback.accuracy === null ? "no labels yet"
    : (100 * view.feedback.accuracy).toFixed(1) + "% on " + view.feedback.labelled_images + " labelled images";
  document.getElementById("monitor-status").textContent = "Window: " + view.window.images + " of "
    + view.window.capacity + " images of " + (view.version || "no version") + "; drift "
    + (view.drift.detected ? "DETECTED" : "not detected") + "; live accuracy " + accuracy + ". "
    + view.drift.notes.join(" ");
  const drift = document.getElementById("drift");
  drift.replaceChildren();
  if (view.drift.checks.length) { row(drift, ["statistic", "distance", "threshold", "distance / threshold"], true); }
  for (const check of view.drift.checks) {
    row(drift, [check.statistic, check.distance.toFixed(4), check.threshold.toFixed(4),
                bar(Math.max(check.distance, 0) / check.threshold / 2, check.drifted)]);
  }
  const mix = document.getElementById("mix");
  mix.replaceChildren();
  const shares = Object.entries(view.class_mix);
  if (shares.length) { row(mix, ["class answered", "share"], true); }
  for (const [name, share] of shares) { row(mix, [name, bar(share, false)]); }
}

document.getElementById("auth").addEventListener("submit", event => {
  event.preventDefault();
  token = document.getElementById("token").value;
  document.getElementById("auth").style.display = "none";
  loadCard();
  loadMonitor();
});
loadCard();
loadMonitor();
setInterval(loadMonitor, 5000);
</script>
</body></html>
"""


def model_page_html(model_name: str) -> str:
    """The page for the model served under `model_name`."""
    return (_PAGE.replace("__TITLE__", html.escape(f"{model_name} — aimass"))
            .replace("__MODEL__", json.dumps(model_name)))
