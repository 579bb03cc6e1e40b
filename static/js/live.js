// Live console glue for htmx's ws extension (django-htmx's hx-ws-2, loaded by {% htmx_script %}).
//
// The extension reconnects with backoff after an abnormal close (1006, 1011-1013). A daphne
// that shuts down cleanly closes with 1001 and a dropped network can report 1005; both
// would leave the page frozen, so those reconnect too. Codes 4000+ are the server saying
// "not logged in / not allowed / no such page": retrying cannot help, so the page says so.
// The server sends the page's current fragments on every (re)connect: that is the catch-up.
//
// Every socket element gets data-live="connecting|open|closed|refused"; <html> carries the
// state of the page's sockets, so CSS and tests can show or wait for "live".
(function () {
  "use strict";
  var RETRY_CODES = [1000, 1001, 1005];

  function setState(elt, state) {
    elt.dataset.live = state;
    document.documentElement.dataset.live = state;
  }

  function retryDelay(attempt) {
    // Full jitter, capped at 8 s: quick after a blip, gentle on a server that is down.
    return Math.random() * Math.min(8000, 500 * Math.pow(2, attempt));
  }

  document.addEventListener("htmx:wsConnecting", function (e) { setState(e.target, "connecting"); });
  document.addEventListener("htmx:wsOpen", function (e) {
    e.target._liveRetries = 0;
    setState(e.target, "open");
  });
  document.addEventListener("htmx:wsClose", function (e) {
    var elt = e.target, code = e.detail.event.code;
    if (code >= 4000) { setState(elt, "refused"); return; }
    setState(elt, "closed");
    if (RETRY_CODES.indexOf(code) < 0 || !document.body.contains(elt)) { return; }
    var attempt = elt._liveRetries || 0;
    elt._liveRetries = attempt + 1;
    setTimeout(function () {
      if (document.body.contains(elt) && elt.dataset.live === "closed") { e.detail.socketWrapper.reconnect(); }
    }, retryDelay(attempt));
  });

})();
