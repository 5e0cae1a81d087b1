/* PDQ perceptual hash of decoded pixels, written for this project from the published
 * algorithm (Meta's pdqhash-2017-10-09 description), to agree bit for bit with the
 * `pdqhash` Python package (Meta's C++ reference), which computes in 32-bit floats.
 *
 * Every arithmetic step is rounded to a 32-bit float with Math.fround, in the order
 * the reference does it, so the sums, the box filter and the DCT give the very same
 * floats; the only remaining source of difference is the decoded pixels themselves.
 *
 * pdqFromRGBA(rgba, width, height) -> {hash: 64 hex digits, quality: 0..100}
 */
(function (root) {
  "use strict";
  var f = Math.fround;
  var PASSES = 2;

  var DCT = (function () {
    var m = new Float32Array(16 * 64);
    var scale = Math.sqrt(2.0 / 64.0);
    for (var i = 0; i < 16; i++) {
      for (var j = 0; j < 64; j++) {
        m[i * 64 + j] = scale * Math.cos((Math.PI / 2 / 64.0) * (i + 1) * (2 * j + 1));
      }
    }
    return m;
  })();

  function windowSize(oldDim, newDim) {
    return Math.floor((oldDim + 2 * newDim - 1) / (2 * newDim));
  }

  // One 1-D box filter over `length` values `stride` apart: a running float sum,
  // with a shorter window at both ends, as the reference does.
  function box1D(src, dst, start, length, stride, full) {
    var half = Math.floor((full + 2) / 2);
    var p1 = half - 1, p2 = full - half + 1, p3 = length - full, p4 = half - 1;
    var li = start, ri = start, oi = start, sum = 0, n = 0, i;
    for (i = 0; i < p1; i++) { sum = f(sum + src[ri]); n++; ri += stride; }
    for (i = 0; i < p2; i++) { sum = f(sum + src[ri]); n++; dst[oi] = sum / n; ri += stride; oi += stride; }
    for (i = 0; i < p3; i++) {
      sum = f(sum + src[ri]); sum = f(sum - src[li]);
      dst[oi] = sum / n; li += stride; ri += stride; oi += stride;
    }
    for (i = 0; i < p4; i++) { sum = f(sum - src[li]); n--; dst[oi] = sum / n; li += stride; oi += stride; }
  }

  // The same filter down the columns, done a row at a time with one running sum per
  // column: the very same float operations in the same order per column as box1D with a
  // stride, but reading memory in order, which is several times faster on large images.
  // The sums live in a Float32Array, so each += rounds to a float as the reference does.
  function boxColumns(src, dst, rows, cols, full) {
    var half = Math.floor((full + 2) / 2);
    var p1 = half - 1, p2 = full - half + 1, p3 = rows - full, p4 = half - 1;
    var sums = new Float32Array(cols), ri = 0, li = 0, oi = 0, n = 0, i, j, r, l, o;
    for (i = 0; i < p1; i++, ri++) {
      r = ri * cols;
      for (j = 0; j < cols; j++) sums[j] += src[r + j];
      n++;
    }
    for (i = 0; i < p2; i++, ri++, oi++) {
      r = ri * cols; o = oi * cols; n++;
      for (j = 0; j < cols; j++) { sums[j] += src[r + j]; dst[o + j] = sums[j] / n; }
    }
    for (i = 0; i < p3; i++, ri++, li++, oi++) {
      r = ri * cols; l = li * cols; o = oi * cols;
      for (j = 0; j < cols; j++) { sums[j] += src[r + j]; sums[j] -= src[l + j]; dst[o + j] = sums[j] / n; }
    }
    for (i = 0; i < p4; i++, li++, oi++) {
      l = li * cols; o = oi * cols; n--;
      for (j = 0; j < cols; j++) { sums[j] -= src[l + j]; dst[o + j] = sums[j] / n; }
    }
  }

  // The row pass, four rows at a time: each row's running sum is the same chain of float
  // additions as box1D's, but one addition has to wait for the one before it (and its
  // rounding), so a single row keeps the CPU idle most of the time; four independent
  // chains side by side fill that time (about twice as fast on a 12-megapixel photo).
  function boxRows(src, dst, rows, cols, full) {
    var half = Math.floor((full + 2) / 2);
    var p1 = half - 1, p2 = full - half + 1, p3 = cols - full, p4 = half - 1;
    var r = 0, i, ri, li, oi, n, s0, s1, s2, s3, b0, b1, b2, b3;
    for (; r + 4 <= rows; r += 4) {
      b0 = r * cols; b1 = b0 + cols; b2 = b1 + cols; b3 = b2 + cols;
      s0 = 0; s1 = 0; s2 = 0; s3 = 0; n = 0; ri = 0; li = 0; oi = 0;
      for (i = 0; i < p1; i++, ri++) {
        s0 = f(s0 + src[b0 + ri]); s1 = f(s1 + src[b1 + ri]); s2 = f(s2 + src[b2 + ri]); s3 = f(s3 + src[b3 + ri]);
        n++;
      }
      for (i = 0; i < p2; i++, ri++, oi++) {
        s0 = f(s0 + src[b0 + ri]); s1 = f(s1 + src[b1 + ri]); s2 = f(s2 + src[b2 + ri]); s3 = f(s3 + src[b3 + ri]);
        n++;
        dst[b0 + oi] = s0 / n; dst[b1 + oi] = s1 / n; dst[b2 + oi] = s2 / n; dst[b3 + oi] = s3 / n;
      }
      for (i = 0; i < p3; i++, ri++, li++, oi++) {
        s0 = f(s0 + src[b0 + ri]); s1 = f(s1 + src[b1 + ri]); s2 = f(s2 + src[b2 + ri]); s3 = f(s3 + src[b3 + ri]);
        s0 = f(s0 - src[b0 + li]); s1 = f(s1 - src[b1 + li]); s2 = f(s2 - src[b2 + li]); s3 = f(s3 - src[b3 + li]);
        dst[b0 + oi] = s0 / n; dst[b1 + oi] = s1 / n; dst[b2 + oi] = s2 / n; dst[b3 + oi] = s3 / n;
      }
      for (i = 0; i < p4; i++, li++, oi++) {
        s0 = f(s0 - src[b0 + li]); s1 = f(s1 - src[b1 + li]); s2 = f(s2 - src[b2 + li]); s3 = f(s3 - src[b3 + li]);
        n--;
        dst[b0 + oi] = s0 / n; dst[b1 + oi] = s1 / n; dst[b2 + oi] = s2 / n; dst[b3 + oi] = s3 / n;
      }
    }
    for (; r < rows; r++) box1D(src, dst, r * cols, cols, 1, full);
  }

  // The last column pass for the 64 columns the decimation reads, only: each column's
  // running sum is its own, so these are the very floats boxColumns gives there, for
  // 64 columns' work instead of all of them (a quarter of the filter on a 4000-px photo).
  function boxSampledColumns(src, dst, rows, cols, full) {
    var picked = [], j, k;
    for (j = 0; j < 64; j++) {
      var c = Math.floor(((j + 0.5) * cols) / 64);
      if (picked[picked.length - 1] !== c) picked.push(c);
    }
    var m = picked.length, sums = new Float32Array(m);
    var half = Math.floor((full + 2) / 2);
    var p1 = half - 1, p2 = full - half + 1, p3 = rows - full, p4 = half - 1;
    var ri = 0, li = 0, oi = 0, n = 0, i, r, l, o;
    for (i = 0; i < p1; i++, ri++) {
      r = ri * cols;
      for (k = 0; k < m; k++) sums[k] += src[r + picked[k]];
      n++;
    }
    for (i = 0; i < p2; i++, ri++, oi++) {
      r = ri * cols; o = oi * cols; n++;
      for (k = 0; k < m; k++) { sums[k] += src[r + picked[k]]; dst[o + picked[k]] = sums[k] / n; }
    }
    for (i = 0; i < p3; i++, ri++, li++, oi++) {
      r = ri * cols; l = li * cols; o = oi * cols;
      for (k = 0; k < m; k++) {
        sums[k] += src[r + picked[k]]; sums[k] -= src[l + picked[k]]; dst[o + picked[k]] = sums[k] / n;
      }
    }
    for (i = 0; i < p4; i++, li++, oi++) {
      l = li * cols; o = oi * cols; n--;
      for (k = 0; k < m; k++) { sums[k] -= src[l + picked[k]]; dst[o + picked[k]] = sums[k] / n; }
    }
  }

  function jarosz(buf, tmp, rows, cols) {
    var wr = windowSize(cols, 64), wc = windowSize(rows, 64);
    for (var pass = 0; pass < PASSES; pass++) {
      boxRows(buf, tmp, rows, cols, wr);
      if (pass < PASSES - 1) boxColumns(tmp, buf, rows, cols, wc);
      else boxSampledColumns(tmp, buf, rows, cols, wc);
    }
  }

  function decimate(buf, rows, cols) {
    var out = new Float32Array(64 * 64);
    for (var i = 0; i < 64; i++) {
      var ini = Math.floor(((i + 0.5) * rows) / 64);
      for (var j = 0; j < 64; j++) {
        var inj = Math.floor(((j + 0.5) * cols) / 64);
        out[i * 64 + j] = buf[ini * cols + inj];
      }
    }
    return out;
  }

  function quality(b) {
    var sum = 0, i, j, d;
    for (i = 0; i < 63; i++) {
      for (j = 0; j < 64; j++) {
        d = Math.trunc(f(f(f(b[i * 64 + j] - b[(i + 1) * 64 + j]) * 100) / 255));
        sum += Math.abs(d);
      }
    }
    for (i = 0; i < 64; i++) {
      for (j = 0; j < 63; j++) {
        d = Math.trunc(f(f(f(b[i * 64 + j] - b[i * 64 + j + 1]) * 100) / 255));
        sum += Math.abs(d);
      }
    }
    return Math.min(100, Math.floor(sum / 90));
  }

  function dct16(a) {
    var t = new Float32Array(16 * 64), out = new Float32Array(256), i, j, k, s;
    for (i = 0; i < 16; i++) {
      for (j = 0; j < 64; j++) {
        s = 0;
        for (k = 0; k < 64; k++) s = f(s + f(DCT[i * 64 + k] * a[k * 64 + j]));
        t[i * 64 + j] = s;
      }
    }
    for (i = 0; i < 16; i++) {
      for (j = 0; j < 16; j++) {
        s = 0;
        for (k = 0; k < 64; k++) s = f(s + f(t[i * 64 + k] * DCT[j * 64 + k]));
        out[i * 16 + j] = s;
      }
    }
    return out;
  }

  function toHex(coeffs) {
    var sorted = Float32Array.from(coeffs).sort();
    var median = sorted[127]; // the lower median, as Torben's selection gives for 256 values
    var hex = "";
    // Bit k (k = row * 16 + column) is set when that coefficient is above the median;
    // the hex digits run from bit 255 down to bit 0.
    for (var k = 255; k >= 0; k -= 4) {
      var nibble = 0;
      for (var b = 0; b < 4; b++) nibble = (nibble << 1) | (coeffs[k - b] > median ? 1 : 0);
      hex += nibble.toString(16);
    }
    return hex;
  }

  function lumaFromRGBA(rgba, width, height) {
    var n = width * height, luma = new Float32Array(n);
    for (var p = 0, q = 0; p < n; p++, q += 4) {
      // Computed in double, then stored as a float: what the Python binding does.
      luma[p] = rgba[q] * 0.299 + rgba[q + 1] * 0.587 + rgba[q + 2] * 0.114;
    }
    return luma;
  }

  function pdqFromLuma(luma, width, height) {
    var tmp = new Float32Array(width * height);
    jarosz(luma, tmp, height, width);
    var small = decimate(luma, height, width);
    var q = quality(small);
    return { hash: toHex(dct16(small)), quality: q };
  }

  function pdqFromRGBA(rgba, width, height) {
    return pdqFromLuma(lumaFromRGBA(rgba, width, height), width, height);
  }

  root.HXPdq = { pdqFromRGBA: pdqFromRGBA, pdqFromLuma: pdqFromLuma };
})(typeof self !== "undefined" ? self : this);

/* Decode an image file with the browser's own decoders, upright (EXIF orientation applied,
 * as the project's client does) and without colour-profile conversion (Pillow applies
 * none), then hash its pixels. Rejects when the file is not a decodable image. */
(function (root) {
  "use strict";
  root.HXPdq.hashBlob = async function (blob) {
    var bitmap = await createImageBitmap(blob, {
      imageOrientation: "from-image",
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
    });
    try {
      var w = bitmap.width, h = bitmap.height;
      var canvas = new OffscreenCanvas(w, h);
      var ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(bitmap, 0, 0);
      var data = ctx.getImageData(0, 0, w, h).data;
      var result = root.HXPdq.pdqFromRGBA(data, w, h);
      result.width = w;
      result.height = h;
      return result;
    } finally {
      bitmap.close();
    }
  };
})(typeof self !== "undefined" ? self : this);
