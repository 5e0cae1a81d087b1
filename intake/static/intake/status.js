/* The status page: prove the case with a signature made from the secret words, see
 * counts, and take hashes back. */
(function () {
  "use strict";
  var C = window.HXCase, cfg = C.config(), msg = C.messages();
  var form = document.getElementById("status-form");
  var error = document.getElementById("status-error");
  var section = document.getElementById("case");
  var list = document.getElementById("case-hashes");
  var note = document.getElementById("withdraw-note");
  var session = null;

  async function proof() {
    return C.sign(session.key, C.STATUS, { case: session.code, created_at: C.now(), nonce: C.nonce() });
  }

  function show(data) {
    list.textContent = "";
    document.getElementById("case-summary").textContent = msg.summary + " " + data.hashes.length;
    var anyActive = false;
    data.hashes.forEach(function (h) {
      var li = document.createElement("li");
      li.dataset.testid = "case-hash";
      li.dataset.signalType = h.signal_type;
      li.dataset.status = h.status;
      var title = document.createElement("p");
      title.className = "name";
      title.textContent = h.signal_type.toUpperCase() + " " + h.value.slice(0, 12) + "… — " + msg[h.status];
      var dl = document.createElement("dl");
      ["received", "matched", "removed", "blocked_at_upload", "deleted_after_withdrawal"].forEach(function (k) {
        var dt = document.createElement("dt"), dd = document.createElement("dd");
        dt.textContent = msg[k];
        dd.textContent = String(h[k]);
        dd.dataset.count = k;
        dl.append(dt, dd);
      });
      li.append(title, dl);
      if (h.status === "active") {
        anyActive = true;
        var b = document.createElement("button");
        b.type = "button";
        b.textContent = msg.withdraw_one;
        b.setAttribute("aria-label", msg.withdraw_one + ": " + h.signal_type.toUpperCase() + " " + h.value.slice(0, 12));
        b.addEventListener("click", function () { withdraw([h]); });
        li.append(b);
      }
      list.append(li);
    });
    document.getElementById("case-withdraw").disabled = !anyActive;
    session.hashes = data.hashes;
    session.program = data.program;
    section.hidden = false;
  }

  async function load(event) {
    if (event) event.preventDefault();
    error.textContent = "";
    var code = document.getElementById("status-code").value.toUpperCase().replace(/[^0-9A-Z]/g, "");
    var secret = C.wordsToSecret(document.getElementById("status-secret").value, cfg.words);
    if (!secret) { error.textContent = msg.bad_secret; return; }
    try {
      session = {
        code: code.replace(/O/g, "0").replace(/[IL]/g, "1"), secret: secret, key: await C.deriveKey(secret),
      };
      var answer = await C.post("../api/status", { code: session.code, request: await proof() });
      if (!answer.ok) {
        section.hidden = true;
        error.textContent = (answer.data && answer.data.detail) || msg.failed;
        return;
      }
      show(answer.data);
      section.focus();
    } catch (e) {
      error.textContent = msg.failed;
    }
  }

  async function withdraw(hashes) {
    note.textContent = msg.withdrawing;
    try {
      var envelopes = [];
      for (var i = 0; i < hashes.length; i++) {
        // A hash is withdrawn with its own key; cases opened before hash keys used the case key.
        var index = hashes[i].key_index;
        var key = index === null || index === undefined ? session.key : await C.deriveHashKey(session.secret, index);
        envelopes.push(await C.sign(key, C.WITHDRAWAL, {
          program: session.program, signal_type: hashes[i].signal_type, value: hashes[i].value,
          created_at: C.now(), nonce: C.nonce(),
        }));
      }
      var answer = await C.post("../api/withdraw", { code: session.code, request: await proof(), envelopes: envelopes });
      if (!answer.ok) { note.textContent = (answer.data && answer.data.detail) || msg.failed; return; }
      show(answer.data.case);
      note.textContent = msg.withdrawn_note;
    } catch (e) {
      note.textContent = msg.failed;
    }
  }

  form.addEventListener("submit", load);
  document.getElementById("case-withdraw").addEventListener("click", function () {
    if (!session || !window.confirm(msg.confirm)) return;
    withdraw(session.hashes.filter(function (h) { return h.status === "active"; }));
  });
})();
