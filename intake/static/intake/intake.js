/* The intake page: choose files, hash them here, send only signed hashes. */
(function () {
  "use strict";
  var C = window.HXCase, cfg = C.config(), msg = C.messages();
  var form = document.getElementById("intake-form");
  var input = document.getElementById("intake-files");
  var list = document.getElementById("items");
  var submit = document.getElementById("intake-submit");
  var formError = document.getElementById("form-error");
  var progress = document.getElementById("send-progress");
  var items = [];
  var busy = 0;

  function age() {
    var picked = form.querySelector("input[name=age]:checked");
    return picked ? picked.value : "";
  }
  function program() { return age() ? cfg[age()] : null; }

  function refresh() {
    var ready = items.filter(function (it) { return it.state === "ready"; }).length;
    submit.disabled = !age() || !ready || busy > 0;
  }

  function showProgram() {
    var p = program(), note = document.getElementById("program-note");
    note.textContent = "";
    if (!p) return;
    if (!p.open) { note.textContent = msg.closed; return; }
    note.textContent = p.member_names.length
      ? msg.program_named + " " + p.member_names.join(", ")
      : msg.program_count + " " + p.member_count;
    items.forEach(checkQuality);
    refresh();
  }

  function checkQuality(it) {
    var p = program();
    if (it.kind === "image" && it.state === "ready" && p && it.quality < p.min_pdq_quality) {
      setState(it, "error", msg.low_quality);
    } else if (it.kind === "image" && it.state === "error" && it.reason === msg.low_quality && p &&
               it.quality >= p.min_pdq_quality) {
      setState(it, "ready", msg.ready);
    }
  }

  function setState(it, state, text) {
    it.state = state;
    it.reason = text;
    it.status.textContent = text;
    it.row.classList.toggle("bad", state === "error");
    refresh();
  }

  function kindOf(file) {
    if (/^image\//.test(file.type)) return "image";
    if (/^video\//.test(file.type)) return "video";
    if (/\.(jpe?g|png|gif|webp|bmp|heic|avif)$/i.test(file.name)) return "image";
    if (/\.(mp4|mov|m4v|webm|mkv|avi|3gp)$/i.test(file.name)) return "video";
    return "";
  }

  function addFile(file) {
    var it = { file: file, kind: kindOf(file), state: "new", hashes: {} };
    var row = document.createElement("li");
    var showThumb = it.kind === "image" && file.size > 0;
    var thumb = document.createElement(showThumb ? "img" : "div");
    thumb.className = "thumb";
    thumb.setAttribute("aria-hidden", "true");
    if (showThumb) {
      it.url = URL.createObjectURL(file);
      thumb.src = it.url;
      thumb.alt = "";
    }
    var body = document.createElement("div");
    body.className = "item-body";
    var name = document.createElement("p");
    name.className = "name";
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = 100; bar.value = 0;
    bar.setAttribute("aria-label", file.name);
    var status = document.createElement("p");
    status.className = "status";
    status.setAttribute("aria-live", "polite");
    var remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = msg.remove;
    remove.setAttribute("aria-label", msg.remove + ": " + file.name);
    remove.addEventListener("click", function () {
      items = items.filter(function (x) { return x !== it; });
      if (queue.indexOf(it) >= 0) { queue.splice(queue.indexOf(it), 1); busy--; }
      it.state = "removed";
      if (it.url) URL.revokeObjectURL(it.url);
      row.remove();
      refresh();
      input.focus();
    });
    body.append(name, bar, status);
    row.append(thumb, body, remove);
    row.dataset.testid = "intake-item";
    list.append(row);
    it.row = row; it.bar = bar; it.status = status;
    items.push(it);
    hashItem(it);
  }

  // Hashing runs in workers (hasher.js), one per core up to four; without workers it
  // runs here, one file at a time.
  var pool = [], queue = [], jobs = {}, nextId = 1;

  function startWorkers() {
    if (pool.length || typeof Worker === "undefined") return;
    var n = Math.max(1, Math.min(4, navigator.hardwareConcurrency || 2));
    for (var i = 0; i < n; i++) {
      try {
        var w = new Worker(cfg.scripts.hasher);
        w.busy = false;
        w.onmessage = onWorkerMessage;
        w.postMessage({ scripts: [cfg.scripts.digests, cfg.scripts.pdq] });
        pool.push(w);
      } catch (e) {
        break;
      }
    }
  }

  function onWorkerMessage(event) {
    var m = event.data, it = jobs[m.id];
    if (m.type === "progress") {
      if (it) it.bar.value = m.value;
      return;
    }
    this.busy = false;
    delete jobs[m.id];
    if (it) finish(it, m);
    pump();
  }

  function pump() {
    pool.forEach(function (w) {
      if (w.busy || !queue.length) return;
      var it = queue.shift(), id = nextId++;
      jobs[id] = it;
      w.busy = true;
      w.postMessage({ id: id, file: it.file, kind: it.kind });
    });
  }

  function finish(it, m) {
    busy--;
    it.bar.value = 100;
    if (m.type === "error") {
      it.row.querySelector(".thumb").removeAttribute("src");
      return setState(it, "error", msg.corrupt);
    }
    it.hashes.md5 = m.md5;
    it.hashes.sha256 = m.sha256;
    if (it.kind === "image") {
      it.hashes.pdq = m.pdq;
      it.quality = m.quality;
    }
    setState(it, "ready", msg.ready);
    checkQuality(it);
  }

  async function hashHere(it) {
    try {
      var d = await window.HXDigest.digestBlob(it.file, function (done, total) {
        it.bar.value = Math.round((done / total) * (it.kind === "image" ? 50 : 100));
      });
      var m = { type: "done", md5: d.md5, sha256: d.sha256 };
      if (it.kind === "image") {
        var pdq = await window.HXPdq.hashBlob(it.file);
        m.pdq = pdq.hash;
        m.quality = pdq.quality;
      }
      finish(it, m);
    } catch (e) {
      finish(it, { type: "error" });
    }
  }

  function hashItem(it) {
    if (!it.kind) return setState(it, "error", msg.not_media);
    if (it.file.size === 0) return setState(it, "error", msg.empty);
    busy++;
    setState(it, "hashing", msg.hashing);
    startWorkers();
    if (!pool.length) return hashHere(it);
    queue.push(it);
    pump();
  }

  function signals(it, p) {
    var wanted = it.kind === "image"
      ? [["pdq", it.hashes.pdq], ["md5", it.hashes.md5], ["sha256", it.hashes.sha256]]
      : [["video_md5", it.hashes.md5], ["sha256", it.hashes.sha256]];
    return wanted.filter(function (s) { return p.signal_types.indexOf(s[0]) >= 0; });
  }

  async function send(event) {
    event.preventDefault();
    formError.textContent = "";
    var p = program();
    if (!p) { formError.textContent = msg.choose_age; return; }
    var ready = items.filter(function (it) { return it.state === "ready"; });
    if (!ready.length) { formError.textContent = msg.choose_files; return; }
    submit.disabled = true;
    busy++;
    try {
      progress.textContent = msg.working;
      var challenge = await (await fetch("api/challenge", { credentials: "same-origin" })).json();
      await new Promise(function (r) { setTimeout(r, 0); });
      var work = C.work(challenge.challenge, challenge.bits);
      var secret = C.newSecret();
      var key = await C.deriveKey(secret);
      var envelopes = [], hashKeys = [], seen = {};
      for (var i = 0; i < ready.length; i++) {
        var list2 = signals(ready[i], p);
        for (var j = 0; j < list2.length; j++) {
          var id = list2[j][0] + ":" + list2[j][1];
          if (seen[id]) continue;
          seen[id] = true;
          var body = {
            program: p.slug, signal_type: list2[j][0], value: list2[j][1], labels: [],
            created_at: C.now(), nonce: C.nonce(),
          };
          if (list2[j][0] === "pdq") body.quality = ready[i].quality;
          // Each hash is signed by a key of its own (derived from the secret and its number).
          var hashKey = await C.deriveHashKey(secret, envelopes.length);
          hashKeys.push(hashKey.publicKey);
          envelopes.push(await C.sign(hashKey, C.SUBMISSION, body));
        }
      }
      progress.textContent = msg.sending;
      var answer = await C.post("api/cases", {
        age: age(), public_key: key.publicKey, hash_keys: hashKeys, challenge: challenge.challenge, work: work, envelopes: envelopes,
      });
      if (!answer.ok) {
        formError.textContent = (answer.data && answer.data.detail) || msg.failed;
        progress.textContent = "";
        return;
      }
      showDone(answer.data.code, C.secretToWords(secret, cfg.words));
    } catch (e) {
      formError.textContent = msg.failed;
      progress.textContent = "";
    } finally {
      busy--;
      refresh();
    }
  }

  function formatCode(code) { return code.replace(/(.{4})(?=.)/g, "$1-"); }

  function showDone(code, words) {
    items.forEach(function (it) { if (it.url) URL.revokeObjectURL(it.url); });
    items = [];
    list.textContent = "";
    form.hidden = true;
    var done = document.getElementById("done");
    document.getElementById("case-code").textContent = formatCode(code);
    document.getElementById("case-secret").textContent = words;
    done.hidden = false;
    done.focus();
    document.getElementById("save-file").onclick = function () {
      var text = msg.file_title + "\n\n" + formatCode(code) + "\n" + words + "\n\n" + msg.file_keep + "\n" +
        location.origin + "/intake/status/\n";
      var a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
      a.download = "my-case.txt";
      document.body.append(a);
      a.click();
      a.remove();
    };
    document.getElementById("print-page").onclick = function () { window.print(); };
  }

  form.querySelectorAll("input[name=age]").forEach(function (r) { r.addEventListener("change", showProgram); });
  input.addEventListener("change", function () {
    Array.prototype.forEach.call(input.files, addFile);
    input.value = "";
  });
  form.addEventListener("submit", send);
  refresh();
})();
