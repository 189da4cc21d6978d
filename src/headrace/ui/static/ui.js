// headrace dashboard: the promote and rollback buttons. Pages read without this script; it only
// sends the admin requests with the token the user typed (kept in this tab's session storage) and
// shows the answer, including a refusal (401 without the token, 409 with the promote_if gate's reason).
// Each form carries the page's CSRF token (equal to the headrace_csrf cookie the page set), sent as
// X-CSRF-Token: the server refuses a browser's admin request without it (403).
(function () {
  "use strict";
  var KEY = "headrace-admin-token";
  var FLASH = "headrace-flash";
  var input = document.getElementById("admin-token");
  var out = document.getElementById("admin-result");
  if (!input || !out) return;
  try { input.value = sessionStorage.getItem(KEY) || ""; } catch (e) { /* storage off */ }
  input.addEventListener("input", function () {
    try { sessionStorage.setItem(KEY, input.value.trim()); } catch (e) { /* storage off */ }
  });
  var flash = null;
  try { flash = sessionStorage.getItem(FLASH); sessionStorage.removeItem(FLASH); } catch (e) { /* storage off */ }
  if (flash) { out.textContent = flash; out.className = "result done"; }

  function show(text, ok) {
    out.textContent = text;
    out.className = "result " + (ok ? "done" : "refused");
  }

  document.querySelectorAll("form.admin").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var action = form.getAttribute("data-action");
      var body = { reason: (form.elements.reason && form.elements.reason.value) || "from the dashboard" };
      if (form.elements.version) body.version = parseInt(form.elements.version.value, 10);
      var force = document.getElementById("admin-force");
      if (action === "promote" && force && force.checked) body.force = true;  // past the promote_if gate
      var headers = { "Content-Type": "application/json", "X-Actor": "dashboard" };
      if (form.elements.csrf) headers["X-CSRF-Token"] = form.elements.csrf.value;
      var token = input.value.trim();
      if (token) headers.Authorization = "Bearer " + token;
      var buttons = form.querySelectorAll("button");
      buttons.forEach(function (b) { b.disabled = true; });
      show(action + ": sending…", true);
      fetch(form.getAttribute("data-endpoint"), { method: "POST", headers: headers, body: JSON.stringify(body) })
        .then(function (response) {
          return response.text().then(function (text) {
            var doc = {};
            try { doc = JSON.parse(text); } catch (e) { doc = { detail: text }; }
            if (response.ok) {
              var message = action + " done" + (doc.forced ? " (forced past the gate)" : "") +
                ": champion of " + doc.model + " is now v" + doc.champion;
              try { sessionStorage.setItem(FLASH, message); } catch (e) { /* storage off */ }
              show(message, true);
              window.location.reload();
              return;
            }
            var detail = typeof doc.detail === "string" ? doc.detail : JSON.stringify(doc.detail);
            show(action + " refused (" + response.status + "): " + detail, false);
            buttons.forEach(function (b) { b.disabled = false; });
          });
        })
        .catch(function (error) {
          show(action + " failed: " + error, false);
          buttons.forEach(function (b) { b.disabled = false; });
        });
    });
  });
})();
