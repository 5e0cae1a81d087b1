/* Incremental MD5 (RFC 1321) and SHA-256 (FIPS 180-4), written for this project.
 *
 * WebCrypto's digest() takes the whole input at once and has no MD5, so a 2 GB video
 * would have to sit in memory; these take the file in slices instead.
 * new HXDigest.MD5() / new HXDigest.SHA256(): .update(Uint8Array), .hex()
 */
(function (root) {
  "use strict";

  function Block(blockWords, littleEndian, compress, state) {
    this.h = Int32Array.from(state);
    this.buf = new Uint8Array(64);
    this.used = 0;
    this.bytes = 0;
    this.le = littleEndian;
    this.compress = compress;
    this.w = new Int32Array(blockWords);
  }
  Block.prototype.update = function (data) {
    var i = 0, n = data.length;
    this.bytes += n;
    if (this.used) {
      while (i < n && this.used < 64) this.buf[this.used++] = data[i++];
      if (this.used < 64) return this;
      this.compress(this.h, this.buf, 0, this.w);
      this.used = 0;
    }
    for (; i + 64 <= n; i += 64) this.compress(this.h, data, i, this.w);
    while (i < n) this.buf[this.used++] = data[i++];
    return this;
  };
  Block.prototype.finish = function () {
    var bits = this.bytes * 8, pad = new Uint8Array((this.used < 56 ? 56 : 120) - this.used + 8);
    pad[0] = 0x80;
    var hi = Math.floor(bits / 4294967296), lo = bits >>> 0, at = pad.length - 8;
    for (var k = 0; k < 4; k++) {
      if (this.le) { pad[at + k] = (lo >>> (8 * k)) & 255; pad[at + 4 + k] = (hi >>> (8 * k)) & 255; }
      else { pad[at + 7 - k] = (lo >>> (8 * k)) & 255; pad[at + 3 - k] = (hi >>> (8 * k)) & 255; }
    }
    var total = this.bytes;
    this.update(pad);
    this.bytes = total;
    var out = "";
    for (var j = 0; j < this.h.length; j++) {
      for (var b = 0; b < 4; b++) {
        var byte = this.le ? (this.h[j] >>> (8 * b)) & 255 : (this.h[j] >>> (24 - 8 * b)) & 255;
        out += (byte < 16 ? "0" : "") + byte.toString(16);
      }
    }
    return out;
  };

  // MD5
  var S = new Int32Array([7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21]);
  var K = new Int32Array(64);
  for (var i = 0; i < 64; i++) K[i] = Math.floor(Math.abs(Math.sin(i + 1)) * 4294967296) | 0;
  function md5Compress(h, d, o, x) {
    for (var t = 0; t < 16; t++) {
      x[t] = d[o + 4 * t] | (d[o + 4 * t + 1] << 8) | (d[o + 4 * t + 2] << 16) | (d[o + 4 * t + 3] << 24);
    }
    var a = h[0], b = h[1], c = h[2], e = h[3], r, sum, tmp;
    // One loop per round, so that no step branches on which round it is in.
    for (r = 0; r < 16; r++) {
      sum = (a + ((b & c) | (~b & e)) + K[r] + x[r]) | 0;
      tmp = e; e = c; c = b; a = tmp;
      b = (b + ((sum << S[r & 3]) | (sum >>> (32 - S[r & 3])))) | 0;
    }
    for (r = 16; r < 32; r++) {
      sum = (a + ((e & b) | (~e & c)) + K[r] + x[(5 * r + 1) & 15]) | 0;
      tmp = e; e = c; c = b; a = tmp;
      b = (b + ((sum << S[4 + (r & 3)]) | (sum >>> (32 - S[4 + (r & 3)])))) | 0;
    }
    for (r = 32; r < 48; r++) {
      sum = (a + (b ^ c ^ e) + K[r] + x[(3 * r + 5) & 15]) | 0;
      tmp = e; e = c; c = b; a = tmp;
      b = (b + ((sum << S[8 + (r & 3)]) | (sum >>> (32 - S[8 + (r & 3)])))) | 0;
    }
    for (r = 48; r < 64; r++) {
      sum = (a + (c ^ (b | ~e)) + K[r] + x[(7 * r) & 15]) | 0;
      tmp = e; e = c; c = b; a = tmp;
      b = (b + ((sum << S[12 + (r & 3)]) | (sum >>> (32 - S[12 + (r & 3)])))) | 0;
    }
    h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + e) | 0;
  }

  // SHA-256
  var KS = new Int32Array(64), primes = [], cand = 2;
  while (primes.length < 64) {
    var isPrime = true;
    for (var p = 0; p < primes.length && primes[p] * primes[p] <= cand; p++) if (cand % primes[p] === 0) isPrime = false;
    if (isPrime) primes.push(cand);
    cand++;
  }
  function frac32(v) { return ((v - Math.floor(v)) * 4294967296) | 0; }
  for (var q = 0; q < 64; q++) KS[q] = frac32(Math.cbrt(primes[q]));
  var H0 = [];
  for (var z = 0; z < 8; z++) H0.push(frac32(Math.sqrt(primes[z])));
  function rotr(v, n) { return (v >>> n) | (v << (32 - n)); }
  function shaCompress(h, d, o, w) {
    var t;
    for (t = 0; t < 16; t++) {
      w[t] = (d[o + 4 * t] << 24) | (d[o + 4 * t + 1] << 16) | (d[o + 4 * t + 2] << 8) | d[o + 4 * t + 3];
    }
    for (t = 16; t < 64; t++) {
      var w15 = w[t - 15], w2 = w[t - 2];
      var s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >>> 3);
      var s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    var a = h[0], b = h[1], c = h[2], e = h[3], ee = h[4], ff = h[5], g = h[6], hh = h[7];
    for (t = 0; t < 64; t++) {
      var S1 = rotr(ee, 6) ^ rotr(ee, 11) ^ rotr(ee, 25);
      var ch = (ee & ff) ^ (~ee & g);
      var t1 = (hh + S1 + ch + KS[t] + w[t]) | 0;
      var S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      var maj = (a & b) ^ (a & c) ^ (b & c);
      var t2 = (S0 + maj) | 0;
      hh = g; g = ff; ff = ee; ee = (e + t1) | 0; e = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + e) | 0;
    h[4] = (h[4] + ee) | 0; h[5] = (h[5] + ff) | 0; h[6] = (h[6] + g) | 0; h[7] = (h[7] + hh) | 0;
  }

  function MD5() {
    Block.call(this, 16, true, md5Compress, [0x67452301, 0xefcdab89 | 0, 0x98badcfe | 0, 0x10325476]);
  }
  MD5.prototype = Object.create(Block.prototype);
  MD5.prototype.hex = Block.prototype.finish;
  function SHA256() { Block.call(this, 64, false, shaCompress, H0); }
  SHA256.prototype = Object.create(Block.prototype);
  SHA256.prototype.hex = Block.prototype.finish;

  /* MD5 and SHA-256 of a File or Blob, read in slices; onProgress(bytesDone, total). */
  async function digestBlob(blob, onProgress, sliceBytes) {
    var md5 = new MD5(), sha = new SHA256(), size = blob.size, step = sliceBytes || 4 * 1024 * 1024;
    for (var at = 0; at < size; at += step) {
      var chunk = new Uint8Array(await blob.slice(at, Math.min(size, at + step)).arrayBuffer());
      md5.update(chunk);
      sha.update(chunk);
      if (onProgress) onProgress(Math.min(size, at + step), size);
    }
    return { md5: md5.hex(), sha256: sha.hex() };
  }

  root.HXDigest = { MD5: MD5, SHA256: SHA256, digestBlob: digestBlob };
})(typeof self !== "undefined" ? self : this);
