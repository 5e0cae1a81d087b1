/* The case's keys, made and kept on the person's device.
 *
 * The secret is 16 random bytes, shown as 16 words (one word per byte). Every key is
 * derived from it with HKDF-SHA-256, so the words alone recreate them on any device:
 * the case key (salt "...case key v1") proves the person to the status page and signs
 * nothing members see; hash key i (salt "...hash key v1", info the decimal i) signs the
 * case's i-th hash and its withdrawal, so no two hashes of a case share a key id that
 * members could join on. The server gets only public keys and signatures. Envelopes
 * are DSSE, as members sign them (docs/envelopes.md).
 */
(function (root) {
  "use strict";
  var enc = new TextEncoder();
  var KDF_SALT = enc.encode("hashexchange intake case key v1");
  var HASH_KDF_SALT = enc.encode("hashexchange intake hash key v1");
  // PKCS#8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410).
  var PKCS8_PREFIX = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

  function hex(bytes) {
    var out = "";
    for (var i = 0; i < bytes.length; i++) out += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    return out;
  }
  function b64(bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s);
  }
  function fromB64url(text) {
    var s = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
    var out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  function newSecret() { return crypto.getRandomValues(new Uint8Array(16)); }

  function secretToWords(secret, words) {
    return Array.prototype.map.call(secret, function (b) { return words[b]; }).join(" ");
  }

  /* Words as typed (any case, any spacing, a word known by its first four letters) to
   * the 16 bytes, or null. */
  function wordsToSecret(text, words) {
    var byPrefix = {};
    words.forEach(function (w, i) { byPrefix[w.slice(0, 4)] = i; });
    var typed = (text || "").toLowerCase().split(/[^a-z]+/).filter(Boolean);
    if (typed.length !== 16) return null;
    var out = new Uint8Array(16);
    for (var i = 0; i < 16; i++) {
      var index = byPrefix[typed[i].slice(0, 4)];
      if (index === undefined) return null;
      out[i] = index;
    }
    return out;
  }

  /* The case key: status and withdrawal requests only. */
  function deriveKey(secret) { return keyFrom(secret, KDF_SALT, new Uint8Array(0)); }
  /* The key of the case's hash number `index` (0, 1, ...). */
  function deriveHashKey(secret, index) { return keyFrom(secret, HASH_KDF_SALT, enc.encode(String(index))); }

  async function keyFrom(secret, salt, info) {
    var ikm = await crypto.subtle.importKey("raw", secret, "HKDF", false, ["deriveBits"]);
    var seed = new Uint8Array(
      await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: salt, info: info }, ikm, 256)
    );
    var pkcs8 = new Uint8Array(48);
    pkcs8.set(PKCS8_PREFIX, 0);
    pkcs8.set(seed, 16);
    var privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
    var jwk = await crypto.subtle.exportKey("jwk", privateKey);
    var publicRaw = fromB64url(jwk.x);
    var keyId = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", publicRaw)));
    return { privateKey: privateKey, publicKey: b64(publicRaw), keyId: keyId };
  }

  function pae(type, payload) {
    var t = enc.encode(type);
    var head = enc.encode("DSSEv1 " + t.length + " "), mid = enc.encode(" " + payload.length + " ");
    var out = new Uint8Array(head.length + t.length + mid.length + payload.length);
    out.set(head, 0); out.set(t, head.length); out.set(mid, head.length + t.length);
    out.set(payload, head.length + t.length + mid.length);
    return out;
  }

  async function sign(key, payloadType, body) {
    var payload = enc.encode(JSON.stringify(body));
    var sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key.privateKey, pae(payloadType, payload)));
    return { payloadType: payloadType, payload: b64(payload), signatures: [{ keyid: key.keyId, sig: b64(sig) }] };
  }

  function nonce() { return hex(crypto.getRandomValues(new Uint8Array(16))); }
  function now() { return new Date().toISOString().replace(/\.\d+Z$/, "Z"); }

  /* The proof of work the server asks before it opens a case: a number that makes the
   * SHA-256 of "challenge:number" start with `bits` zero bits. */
  function work(challenge, bits) {
    for (var n = 0; ; n++) {
      var h = new root.HXDigest.SHA256().update(enc.encode(challenge + ":" + n)).hex();
      var zeros = 0;
      for (var i = 0; i < h.length; i++) {
        var d = parseInt(h[i], 16);
        if (d === 0) { zeros += 4; continue; }
        zeros += Math.clz32(d) - 28;
        break;
      }
      if (zeros >= bits) return String(n);
    }
  }

  function csrf() {
    var m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  async function post(url, body) {
    var response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify(body),
    });
    var data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    return { ok: response.ok, status: response.status, data: data };
  }

  function config() { return JSON.parse(document.getElementById("intake-config").textContent); }
  function messages() {
    var out = {}, t = document.getElementById("messages");
    t.content.querySelectorAll("[data-key]").forEach(function (el) { out[el.dataset.key] = el.textContent; });
    return out;
  }

  root.HXCase = {
    newSecret: newSecret, secretToWords: secretToWords, wordsToSecret: wordsToSecret, deriveKey: deriveKey,
    deriveHashKey: deriveHashKey,
    sign: sign, nonce: nonce, now: now, work: work, post: post, config: config, messages: messages, hex: hex,
    SUBMISSION: "application/vnd.hashexchange.submission+json",
    WITHDRAWAL: "application/vnd.hashexchange.withdrawal+json",
    STATUS: "application/vnd.hashexchange.intake-status+json",
  };
})(typeof self !== "undefined" ? self : this);
