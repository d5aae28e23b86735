// One run, live: the gateway's WebSocket sends a snapshot, then every transition.
// Browsers cannot set headers on a WebSocket, so the key goes as the token parameter.
"use strict";
(function () {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const key = sessionStorage.getItem("figway.key");
  const message = document.getElementById("message");
  const summary = document.getElementById("summary");
  const body = document.querySelector("#nodes tbody");
  const events = document.getElementById("events");
  const nodes = new Map();
  let run = null;
  document.getElementById("run-id").textContent = id;

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function draw() {
    summary.textContent = run.workflow_id + " on " + run.backend + ": " + run.status +
      (run.waiting_for ? " (waiting for " + run.waiting_for + ")" : "") +
      (run.error ? " (" + run.error + ")" : "");
    summary.dataset.status = run.status;
    body.replaceChildren();
    const ordered = [...nodes.values()].sort((a, b) => a.level - b.level || a.id.localeCompare(b.id));
    for (const node of ordered) {
      const row = document.createElement("tr");
      row.dataset.node = node.id;
      cell(row, node.level);
      cell(row, node.id);
      cell(row, node.status).className = "status " + node.status;
      cell(row, node.attempt + "/" + node.max_attempts);
      cell(row, node.error);
      body.appendChild(row);
    }
  }

  function note(text) {
    const li = document.createElement("li");
    li.textContent = new Date().toLocaleTimeString() + " " + text;
    events.appendChild(li);
  }

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const address = scheme + "//" + location.host + "/ws/workflow_runs/" + encodeURIComponent(id) +
    (key ? "?token=" + encodeURIComponent(key) : "");
  const socket = new WebSocket(address);
  socket.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.type === "snapshot") {
      run = data.run;
      nodes.clear();
      for (const [nodeId, node] of Object.entries(run.nodes)) {
        nodes.set(nodeId, { id: nodeId, level: node.level || 0, status: node.status,
          attempt: node.attempts, max_attempts: node.max_attempts, error: node.error });
      }
    } else if (run && data.type === "run") {
      run.status = data.status;
      if (data.error) run.error = data.error;
      if ("waiting_for" in data) run.waiting_for = data.waiting_for;
      note("run " + data.status + (data.waiting_for ? " (waiting for " + data.waiting_for + ")" : ""));
    } else if (run && data.type === "node" && nodes.has(data.node_id)) {
      const node = nodes.get(data.node_id);
      node.status = data.status;
      node.attempt = data.attempt || node.attempt;
      node.error = data.error;
      note("node " + data.node_id + " " + data.status);
    }
    if (run) draw();
  };
  socket.onclose = (event) => {
    if (event.code !== 1000) {
      message.textContent = "feed closed (" + event.code + ")" + (event.reason ? ": " + event.reason : "");
      message.className = "error";
    }
  };
})();
