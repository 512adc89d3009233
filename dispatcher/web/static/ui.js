// The dashboard's own script (no inline scripts: the CSP allows only files of /ui/static).
// - "reconnecting": shown while requests to the daemon fail, hidden when one succeeds;
// - the log's SSE source resumes at the last byte offset shown (each event's id);
// - review comments on diff lines, collected and sent as one follow-up.
(function () {
  "use strict";
  var conn = function () { return document.getElementById("conn"); };
  function lost() { var c = conn(); if (c) { c.hidden = false; } document.body.classList.add("offline"); }
  function back() { var c = conn(); if (c) { c.hidden = true; } document.body.classList.remove("offline"); }

  document.addEventListener("htmx:sendError", lost);
  document.addEventListener("htmx:sseError", lost);
  document.addEventListener("htmx:sseOpen", back);
  document.addEventListener("htmx:afterRequest", function (e) {
    if (e.detail && e.detail.xhr && e.detail.xhr.status > 0) { back(); }
  });

  // Each log event's id is "<file id>:<byte offset after it>": a new EventSource (htmx-ext-sse
  // makes one after the old one closed) starts there instead of at 0, in that same file.
  document.addEventListener("htmx:sseBeforeMessage", function (e) {
    var id = e.detail && e.detail.lastEventId;
    var box = e.target.closest("[data-log-base]");
    var at = id ? /^(\d+):(\d+)$/.exec(id) : null;
    if (box && at) {
      box.setAttribute("sse-connect", box.dataset.logBase + "?offset=" + at[2] + "&file_id=" + at[1]);
    }
    // The job ended while the page was open: its header and changes are read again.
    if (box && e.detail && e.detail.type === "end" && box.hasAttribute("data-refresh-on-end")) {
      htmx.trigger(document.body, "job-changed");
    }
  });
  // The log box follows new output while the reader is at its end.
  document.addEventListener("htmx:sseMessage", function (e) {
    var log = document.getElementById("log");
    if (log && e.target === log) { log.scrollTop = log.scrollHeight; }
  });

  // ---- review comments
  var where = null;
  function el(id) { return document.getElementById(id); }
  function hidden(name, value) {
    var input = document.createElement("input");
    input.type = "hidden"; input.name = name; input.value = value;
    return input;
  }
  function countComments() {
    var n = el("review-comments").children.length;
    el("review").hidden = n === 0;
    el("review-send").textContent = "Send " + n + " comment" + (n === 1 ? "" : "s") + " as one follow-up";
  }
  document.addEventListener("click", function (e) {
    var button = e.target.closest ? e.target.closest("button.cmt") : null;
    if (button) {
      var table = button.closest("table[data-path]");
      where = { path: table.dataset.path, line: button.dataset.line };
      var composer = el("composer");
      el("composer-where").textContent = where.path + ":" + where.line.replace("-", "") + (where.line[0] === "-" ? " (removed)" : "");
      var row = button.closest("tr");
      row.parentNode.insertBefore(composerRow(composer), row.nextSibling);
      composer.hidden = false;
      el("composer-text").value = "";
      el("composer-text").focus();
      return;
    }
    if (e.target.id === "composer-cancel") { closeComposer(); return; }
    if (e.target.id === "composer-add") { addComment(); return; }
    if (e.target.classList && e.target.classList.contains("remove-comment")) {
      e.target.closest("li").remove(); countComments();
    }
  });
  function composerRow(composer) {
    var row = el("composer-row");
    if (!row) {
      row = document.createElement("tr"); row.id = "composer-row";
      var cell = document.createElement("td"); cell.colSpan = 4; row.appendChild(cell);
    }
    row.firstChild.appendChild(composer);
    return row;
  }
  function closeComposer() {
    var composer = el("composer"); composer.hidden = true;
    el("diff").prepend(composer);
    var row = el("composer-row"); if (row) { row.remove(); }
  }
  function addComment() {
    var text = el("composer-text").value.trim();
    if (!text || !where) { el("composer-text").focus(); return; }
    var li = document.createElement("li");
    var label = document.createElement("code");
    label.textContent = where.path + ":" + where.line.replace("-", "");
    var body = document.createElement("span"); body.textContent = " " + text + " ";
    var remove = document.createElement("button");
    remove.type = "button"; remove.className = "link remove-comment"; remove.textContent = "Remove";
    remove.setAttribute("aria-label", "Remove comment on " + label.textContent);
    li.append(label, body, remove,
              hidden("c_path", where.path), hidden("c_line", where.line), hidden("c_text", text));
    el("review-comments").appendChild(li);
    closeComposer();
    countComments();
  }
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && el("composer") && !el("composer").hidden) { closeComposer(); }
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && e.target.id === "composer-text") { addComment(); }
  });
})();
