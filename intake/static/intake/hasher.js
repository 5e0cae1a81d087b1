/* A hashing worker: the page hands it one file at a time and gets back its hashes, so
 * several files are hashed at once (one worker per core) and the page stays responsive
 * while a large photo is decoded. The same code as on the page: digests.js and pdq.js.
 *
 * in:  {scripts: [URL of digests.js, URL of pdq.js]} once, then {id, file, kind: "image" | "video"}
 * out: {id, type: "progress", value: 0..100}
 *      {id, type: "done", md5, sha256, pdq?, quality?}
 *      {id, type: "error", reason: "corrupt"}
 */
/* global importScripts, HXDigest, HXPdq */

self.onmessage = async function (event) {
  var job = event.data;
  if (job.scripts) {
    // The page names the scripts (their URLs are the server's to choose), once.
    importScripts.apply(self, job.scripts);
    return;
  }
  var image = job.kind === "image";
  try {
    var digests = await HXDigest.digestBlob(job.file, function (done, total) {
      self.postMessage({ id: job.id, type: "progress", value: Math.round((done / total) * (image ? 50 : 100)) });
    });
    var out = { id: job.id, type: "done", md5: digests.md5, sha256: digests.sha256 };
    if (image) {
      try {
        var pdq = await HXPdq.hashBlob(job.file);
        out.pdq = pdq.hash;
        out.quality = pdq.quality;
      } catch (e) {
        self.postMessage({ id: job.id, type: "error", reason: "corrupt" });
        return;
      }
    }
    self.postMessage(out);
  } catch (e) {
    self.postMessage({ id: job.id, type: "error", reason: "corrupt" });
  }
};
