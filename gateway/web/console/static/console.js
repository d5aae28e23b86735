// figway console: fetches the panel with the key the user pasted, and sends admin
// actions to the same endpoints as the CLI. The key is kept in sessionStorage: this tab
// only, gone when it closes, and sent to this gateway only.
"use strict";
(function () {
  const KEY = "figway.key";
  const REFRESH_MS = 10000;
  const panel = document.getElementById("panel");
  const message = document.getElementById("message");
  const since = document.getElementById("since");
  let timer = null;

  function headers() {
    const key = sessionStorage.getItem(KEY);
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function say(text, kind) {
    message.textContent = text;
    message.className = kind || "";
  }

  async function detail(response) {
    try {
      const body = await response.json();
      return body.detail || JSON.stringify(body);
    } catch (e) {
      return response.statusText;
    }
  }

  async function load() {
    clearTimeout(timer);
    try {
      const response = await fetch("/console/panel?since=" + encodeURIComponent(since.value), {
        headers: headers(),
      });
      if (response.ok) {
        panel.innerHTML = await response.text();  // rendered and escaped by the gateway
        panel.dataset.loaded = String(Date.now());
        if (message.className === "error") say("");
      } else {
        say(response.status + ": " + (await detail(response)), "error");
        if (response.status === 401 || response.status === 403) panel.innerHTML = "";
      }
    } catch (e) {
      say("cannot reach the gateway: " + e, "error");
    }
    timer = setTimeout(load, REFRESH_MS);
  }

  async function act(button) {
    if (!window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const response = await fetch(button.dataset.path, { method: "POST", headers: headers() });
      if (response.ok) {
        say("done: " + button.textContent + " (" + button.dataset.path + ")", "done");
      } else {
        say(button.textContent + " refused: " + response.status + " " + (await detail(response)), "error");
      }
    } finally {
      await load();
    }
  }

  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("key");
    if (input.value.trim()) sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    say(sessionStorage.getItem(KEY) ? "using the key you gave" : "");
    load();
  });
  document.getElementById("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    say("key forgotten");
    load();
  });
  since.addEventListener("change", load);
  panel.addEventListener("click", (event) => {
    const button = event.target.closest("button.action");
    if (button) act(button);
  });
  window.figwayConsole = { act: (path) => fetch(path, { method: "POST", headers: headers() }), load };
  load();
})();
