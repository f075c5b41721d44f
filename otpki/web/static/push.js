// "Push now" with live progress: POST the API's event stream (the session cookie and its CSRF token go with it),
// and show each stage of the push, then its outcome. Without this script the form posts and the page shows the
// outcome when the push has ended. Everything shown is set as text, never as markup.
"use strict";

function pushLine(list, text, state) {
  const item = document.createElement("li");
  item.textContent = text;
  if (state) item.dataset.state = state;
  list.appendChild(item);
}

function pushOutcomeText(report) {
  const done = (report.outcomes || [])[0];
  if (!done) {
    const skipped = (report.skipped || [])[0];
    return ["skipped", skipped && skipped.reason ? "skipped: " + skipped.reason : "up to date: nothing to push"];
  }
  if (done.result === "delivered") return ["delivered", "delivered: certificate " + done.serial + ", trust list v" + done.trust_version];
  if (done.result === "not_applied") return ["not_applied", "trust list not applied: " + done.error];
  return ["failed", "failed at " + (done.step || "push") + ": " + done.status + " (" + done.error + ")"];
}

async function pushNow(form) {
  const panel = document.getElementById("push-progress");
  const list = panel.querySelector("ol");
  const result = panel.querySelector(".result");
  panel.hidden = false;
  panel.dataset.state = "running";
  panel.querySelector("h2").textContent = "Push to " + form.dataset.address;
  list.replaceChildren();
  result.textContent = "";
  const finish = (state, text) => { panel.dataset.state = state; result.textContent = text; };
  let response;
  try {
    response = await fetch(form.dataset.events, {method: "POST", credentials: "same-origin",
      headers: {"X-CSRF-Token": form.elements.csrf_token.value, "Accept": "text/event-stream"}});
  } catch (err) {
    finish("error", "error: " + err);
    return;
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message; } catch (err) { /* not JSON: keep the status */ }
    finish("error", "error: " + message);
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      const payload = JSON.parse(data || "null");
      if (name === "step") {
        pushLine(list, payload.step + ": " + payload.status + (payload.detail ? " (" + payload.detail + ")" : ""),
                 payload.status);
      } else if (name === "outcome") {
        const [state, text] = pushOutcomeText(payload);
        finish(state, text);
      } else if (name === "error") {
        finish("error", "error: " + payload.code + ": " + payload.message);
      }
    }
  }
  if (panel.dataset.state === "running") finish("error", "error: the stream ended without an outcome");
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form.push-now")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      pushNow(form);
    });
  }
});
