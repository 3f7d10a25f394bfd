// uploadsvc's own upload page (docs/browsers.md). It speaks the path
// protocol of docs/protocol.md: PUT a file to its path; after a dropped
// connection, ask the server how much it has (HEAD) and send the rest with
// Content-Range. A file the page saw before (same name, size and
// modification time, remembered in localStorage) resumes at the server's
// offset after a reload, once the user picks it again.
"use strict";

(function () {
  var KNOWN = "uploadsvc.upload:";
  var TOKEN = "uploadsvc.token";
  var FOLDER = "uploadsvc.folder";
  // Milliseconds before retry n; back to the first after any progress.
  var BACKOFF = [500, 1000, 2000, 4000, 8000, 15000, 30000];
  var PARALLEL = 3;
  // A body that makes no progress for this long rides a half-dead
  // connection (a phone that changed networks): drop it and go on.
  var STALL_MS = 30000;
  // Statuses worth another try: the link or the server was briefly unwell.
  var RETRY = { 0: 1, 408: 1, 423: 1, 429: 1, 500: 1, 502: 1, 503: 1, 504: 1 };

  // The server's mount prefix: this page lives at <prefix>/.upload/.
  var base = location.pathname.replace(/\/\.upload\/[^/]*$/, "");
  var items = [];

  function $(id) { return document.getElementById(id); }

  function storage(kind) {
    try { return window[kind]; } catch (e) { return null; }
  }

  function load(kind, key) {
    var s = storage(kind);
    try { return s ? s.getItem(key) : null; } catch (e) { return null; }
  }

  function save(kind, key, value) {
    var s = storage(kind);
    try {
      if (!s) return;
      if (value === null) s.removeItem(key); else s.setItem(key, value);
    } catch (e) { /* full or forbidden: the page still works, without memory */ }
  }

  function token() { return $("token").value.trim(); }

  function formatBytes(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  // The identity of a file across reloads: where it came from (its name, or
  // its path inside a picked or dropped folder), its size and its time.
  function identity(file, relative) {
    return KNOWN + JSON.stringify([relative, file.size, file.lastModified]);
  }

  function readKnown(key) {
    try {
      var value = JSON.parse(load("localStorage", key) || "null");
      return value && Array.isArray(value.components) ? value : null;
    } catch (e) { return null; }
  }

  // Path components on the server: the folder field, then the file's own
  // path; NFC, as the server wants it (docs/protocol.md section 1).
  function destination(relative) {
    var folder = $("folder").value.split("/");
    var parts = folder.concat(relative.split("/"));
    return parts.filter(function (p) { return p !== ""; })
      .map(function (p) { return p.normalize("NFC"); });
  }

  function Item(file, relative) {
    this.file = file;
    this.relative = relative;
    this.key = identity(file, relative);
    var known = readKnown(this.key);
    this.components = known ? known.components : destination(relative);
    // Ask the server where to go on before sending: a file seen before, or
    // after any failed attempt. A new file starts with a plain PUT, which
    // starts over whatever another client left at that path.
    this.resuming = !!known;
    this.path = this.components.join("/");
    this.url = base + "/" + this.components.map(encodeURIComponent).join("/");
    this.acked = 0;
    this.sent = 0;
    this.failures = 0;
    this.stalls = 0;
    // Each run of the upload loop has its own number: a loop that a pause
    // ended must not go on after a quick resume started the next one.
    this.generation = 0;
    this.state = "queued";
    this.xhr = null;
    this.timer = null;
    this.wake = null;
    this.row = this.makeRow();
  }

  Item.prototype.makeRow = function () {
    var li = document.createElement("li");
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = this.path + " (" + formatBytes(this.file.size) + ")";
    var button = document.createElement("button");
    button.type = "button";
    button.className = "toggle";
    var self = this;
    button.addEventListener("click", function () {
      if (self.state === "uploading" || self.state === "waiting" || self.state === "queued") {
        self.pause();
      } else if (self.state === "paused" || self.state === "failed") {
        self.resume();
      }
    });
    var bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    var status = document.createElement("span");
    status.className = "status";
    li.appendChild(name);
    li.appendChild(button);
    li.appendChild(bar);
    li.appendChild(status);
    li.dataset.path = this.path;
    this.bar = bar;
    this.button = button;
    this.status = status;
    return li;
  };

  Item.prototype.show = function (text) {
    var size = this.file.size;
    var done = Math.min(Math.max(this.sent, this.acked), size);
    this.bar.value = size ? done / size : (this.state === "done" ? 1 : 0);
    this.row.dataset.state = this.state;
    this.row.dataset.acked = String(this.acked);
    this.button.textContent = { paused: "Resume", failed: "Retry", done: "" }[this.state] || "Pause";
    this.button.hidden = this.state === "done";
    if (text !== undefined) this.status.textContent = text;
    showOverall();
  };

  Item.prototype.pause = function () {
    this.state = "paused";
    this.stop();
    this.show("Paused at " + formatBytes(this.acked) + ".");
    schedule();
  };

  Item.prototype.resume = function () {
    this.state = "queued";
    this.resuming = true;
    this.failures = 0;
    this.show("Waiting for its turn.");
    schedule();
  };

  Item.prototype.stop = function () {
    if (this.xhr) { var x = this.xhr; this.xhr = null; x.abort(); }
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.wake) { var w = this.wake; this.wake = null; w(); }
  };

  Item.prototype.remember = function () {
    save("localStorage", this.key, JSON.stringify({
      components: this.components, size: this.file.size, saved: Date.now()
    }));
  };

  Item.prototype.forget = function () { save("localStorage", this.key, null); };

  function Failure(message, retry, status) {
    this.message = message;
    this.retry = retry;
    this.status = status;
  }

  // One request; resolves with the XHR whatever its status, rejects on a
  // network failure (status 0) or an abort (a pause).
  Item.prototype.request = function (method, headers, body, progress) {
    var self = this;
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      self.xhr = xhr;
      xhr.open(method, self.url);
      var t = token();
      if (t) xhr.setRequestHeader("Authorization", "Bearer " + t);
      Object.keys(headers).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
      var watchdog = null, stalled = false;
      function disarm() { clearTimeout(watchdog); watchdog = null; }
      function arm() {
        disarm();
        watchdog = setTimeout(function () { stalled = true; xhr.abort(); }, STALL_MS);
      }
      xhr.onload = function () {
        disarm();
        if (self.xhr === xhr) self.xhr = null;
        resolve(xhr);
      };
      xhr.onerror = function () {
        disarm();
        if (self.xhr === xhr) self.xhr = null;
        reject(new Failure("The connection failed.", true, 0));
      };
      xhr.onabort = function () {
        disarm();
        if (self.xhr === xhr) self.xhr = null;
        reject(stalled ? new Failure("The connection stalled.", true, 0)
                       : new Failure("Stopped.", false, 0));
      };
      if (progress) {
        xhr.upload.onprogress = function (e) { progress(e.loaded); arm(); };
        xhr.upload.onload = disarm; // all sent: the server finishes it
        arm();
      }
      xhr.send(body);
    });
  };

  function reason(xhr) {
    var text = (xhr.responseText || "").trim().split("\n")[0];
    return xhr.status + " " + (text || xhr.statusText);
  }

  function refusal(xhr) {
    return new Failure(reason(xhr), !!RETRY[xhr.status], xhr.status);
  }

  function header(xhr, name) {
    var value = xhr.getResponseHeader(name);
    return value === null ? null : Number(value);
  }

  // How much of this upload the server has: a number, or "complete".
  Item.prototype.query = async function () {
    this.show("Asking the server how much it has...");
    var xhr = await this.request("HEAD", {}, null);
    var size = this.file.size;
    if (xhr.status === 404) {
      this.resuming = false; // nothing there: start from the first byte
      return 0;
    }
    if (xhr.status === 204) {
      var total = header(xhr, "Upload-Length");
      if (total !== null && total !== size) {
        throw new Failure("The server holds another upload of " + formatBytes(total) +
                          " at this path.", false, 409);
      }
      return header(xhr, "Upload-Offset") || 0;
    }
    if (xhr.status === 200) {
      if (header(xhr, "Upload-Offset") === size) return "complete";
      throw new Failure("Another file is already at this path.", false, 409);
    }
    throw refusal(xhr);
  };

  Item.prototype.send = async function (offset) {
    var size = this.file.size;
    var headers = {};
    var body = this.file;
    if (this.resuming && size > 0) {
      if (offset >= size) {
        headers["Content-Range"] = "bytes */" + size; // all there: let it finish
        body = null;
      } else {
        headers["Content-Range"] = "bytes " + offset + "-" + (size - 1) + "/" + size;
        body = this.file.slice(offset);
      }
    }
    var self = this;
    this.show(offset ? "Uploading from " + formatBytes(offset) + "..." : "Uploading...");
    return this.request("PUT", headers, body, function (loaded) {
      self.sent = offset + loaded;
      self.show();
    });
  };

  Item.prototype.run = async function () {
    var gen = ++this.generation;
    var self = this;
    function current() { return self.state === "uploading" && gen === self.generation; }
    this.state = "uploading";
    this.show("Starting...");
    while (current()) {
      var before = this.acked;
      try {
        var offset = 0;
        if (this.resuming) {
          offset = await this.query();
          if (offset === "complete") {
            this.finish("Already on the server.");
            return;
          }
          this.acked = this.sent = offset;
          if (offset > 0) this.row.dataset.resumedFrom = String(offset);
        }
        this.remember();
        var xhr = await this.send(offset);
        if (xhr.status === 200 || xhr.status === 201) {
          this.acked = this.sent = this.file.size;
          this.finish(xhr.status === 201 ? "Uploaded." : "Uploaded (replaced, or already there).");
          return;
        }
        if ((xhr.status === 204 || xhr.status === 409) && header(xhr, "Upload-Offset") !== null) {
          // Short of the end, or the server has more or less than we thought.
          var now = header(xhr, "Upload-Offset");
          this.stalls = now > this.acked ? 0 : this.stalls + 1;
          if (this.stalls > 3) throw new Failure(reason(xhr) + " (no progress)", false, xhr.status);
          this.acked = now;
          this.resuming = true;
          continue;
        }
        throw refusal(xhr);
      } catch (e) {
        if (!current()) return; // paused meanwhile
        if (!(e instanceof Failure)) e = new Failure(String(e), false, 0);
        if (!e.retry) {
          this.state = "failed";
          if (e.status === 401) e.message += " (enter a valid access token, then Retry)";
          this.show(e.message);
          schedule();
          return;
        }
        this.resuming = true;
        this.sent = this.acked;
        await this.backoff(e, before);
      }
    }
  };

  Item.prototype.backoff = function (failure, before) {
    // The server may have kept more than it acknowledged: ask on the retry.
    if (this.sent > before || this.acked > before) this.failures = 0;
    var delay = BACKOFF[Math.min(this.failures, BACKOFF.length - 1)];
    this.failures++;
    this.state = "waiting";
    this.show(failure.message + " Trying again in " + Math.round(delay / 100) / 10 + " s.");
    var self = this;
    return new Promise(function (resolve) {
      // Called by the timer, by "back online", and by a pause (which has
      // set the state to paused first, so the loop then ends).
      self.wake = function () {
        if (self.state === "waiting") self.state = "uploading";
        resolve();
      };
      self.timer = setTimeout(function () {
        self.timer = null;
        var wake = self.wake;
        self.wake = null;
        if (wake) wake();
      }, delay);
    });
  };

  Item.prototype.finish = function (text) {
    this.state = "done";
    this.acked = this.sent = this.file.size;
    this.forget();
    this.show(text);
    schedule();
    showUnfinished();
  };

  function schedule() {
    var active = items.filter(function (i) {
      return i.state === "uploading" || i.state === "waiting";
    }).length;
    items.forEach(function (item) {
      if (active < PARALLEL && item.state === "queued") {
        active++;
        item.run();
      }
    });
    showOverall();
  }

  function showOverall() {
    var total = 0, done = 0, counts = {};
    items.forEach(function (i) {
      total += i.file.size;
      done += Math.min(Math.max(i.sent, i.acked), i.file.size);
      counts[i.state] = (counts[i.state] || 0) + 1;
    });
    var finished = counts.done || 0;
    $("overallBar").value = total ? done / total : (items.length && finished === items.length ? 1 : 0);
    var state = !items.length ? "idle"
      : finished === items.length ? "done"
      : (counts.uploading || counts.waiting || counts.queued) ? "busy"
      : counts.failed ? "failed" : "paused";
    $("overall").dataset.state = state;
    $("overallText").textContent = items.length
      ? finished + " of " + items.length + " files, " + formatBytes(done) + " of " + formatBytes(total) +
        (counts.failed ? ", " + counts.failed + " failed" : "")
      : "No files yet.";
  }

  function add(file, relative) {
    var key = identity(file, relative);
    var same = items.filter(function (i) { return i.key === key && i.state !== "failed"; });
    if (same.length) return;
    var item = new Item(file, relative);
    items.push(item);
    $("queue").appendChild(item.row);
    item.show(item.resuming ? "Seen before: will go on where it stopped." : "Waiting for its turn.");
  }

  function addFiles(list) {
    Array.prototype.forEach.call(list, function (file) {
      add(file, file.webkitRelativePath || file.name);
    });
    schedule();
    showUnfinished();
  }

  // Everything in a dropped folder, with paths relative to the drop.
  function walk(entry, out) {
    if (entry.isFile) {
      return new Promise(function (resolve) {
        entry.file(function (file) {
          out.push([file, entry.fullPath.replace(/^\//, "")]);
          resolve();
        }, function () { resolve(); });
      });
    }
    if (!entry.isDirectory) return Promise.resolve();
    var reader = entry.createReader();
    return new Promise(function (resolve) {
      var pending = [];
      (function more() {
        reader.readEntries(function (entries) {
          if (!entries.length) {
            Promise.all(pending).then(resolve);
            return;
          }
          entries.forEach(function (e) { pending.push(walk(e, out)); });
          more();
        }, function () { Promise.all(pending).then(resolve); });
      })();
    });
  }

  function onDrop(event) {
    event.preventDefault();
    $("drop").classList.remove("over");
    var transfer = event.dataTransfer;
    var entries = Array.prototype.map.call(transfer.items || [], function (item) {
      return item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    });
    if (!entries.length || entries.some(function (e) { return !e; })) {
      addFiles(transfer.files);
      return;
    }
    var found = [];
    Promise.all(entries.map(function (e) { return walk(e, found); })).then(function () {
      found.forEach(function (pair) { add(pair[0], pair[1]); });
      schedule();
      showUnfinished();
    });
  }

  // Uploads a reload interrupted: remembered here, not picked again yet.
  function showUnfinished() {
    var list = $("unfinishedList");
    list.textContent = "";
    var s = storage("localStorage");
    var keys = [];
    try {
      for (var i = 0; s && i < s.length; i++) {
        var k = s.key(i);
        if (k && k.indexOf(KNOWN) === 0) keys.push(k);
      }
    } catch (e) { keys = []; }
    var picked = {};
    items.forEach(function (i) { picked[i.key] = true; });
    keys.filter(function (k) { return !picked[k]; }).forEach(function (k) {
      var known = readKnown(k);
      if (!known) return;
      var li = document.createElement("li");
      li.textContent = known.components.join("/") + " (" + formatBytes(known.size || 0) + ") ";
      var forget = document.createElement("button");
      forget.type = "button";
      forget.textContent = "Forget";
      forget.addEventListener("click", function () { save("localStorage", k, null); showUnfinished(); });
      li.appendChild(forget);
      list.appendChild(li);
    });
    $("unfinished").hidden = !list.children.length;
  }

  function start() {
    $("token").value = load("sessionStorage", TOKEN) || "";
    $("token").addEventListener("input", function () {
      save("sessionStorage", TOKEN, token() || null);
    });
    $("folder").value = load("sessionStorage", FOLDER) || "";
    $("folder").addEventListener("input", function () {
      save("sessionStorage", FOLDER, $("folder").value || null);
    });
    ["files", "dir"].forEach(function (id) {
      $(id).addEventListener("change", function () {
        addFiles(this.files);
        this.value = "";
      });
    });
    var drop = $("drop");
    drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
    drop.addEventListener("drop", onDrop);
    $("pauseAll").addEventListener("click", function () {
      items.forEach(function (i) {
        if (i.state === "uploading" || i.state === "waiting" || i.state === "queued") i.pause();
      });
    });
    $("resumeAll").addEventListener("click", function () {
      items.forEach(function (i) { if (i.state === "paused" || i.state === "failed") i.resume(); });
    });
    // Back online: the waiting ones need not wait for their timers.
    window.addEventListener("online", function () {
      items.forEach(function (i) { if (i.state === "waiting" && i.wake) i.stop(); });
    });
    showUnfinished();
    showOverall();
  }

  start();
})();
