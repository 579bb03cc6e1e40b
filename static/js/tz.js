// Tell the server the browser's IANA timezone so times render in the user's zone
// (blockmig.timezones.UserTimezoneMiddleware reads the `tz` cookie).
(function () {
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!zone) return;
    // IANA names (Europe/Berlin, America/Argentina/Buenos_Aires) are valid cookie values
    // as they are; the server reads the cookie without URL-decoding it.
    if (!/^[A-Za-z0-9_+\-\/]+$/.test(zone)) return;
    var current = document.cookie.split("; ").find(function (c) { return c.indexOf("tz=") === 0; });
    if (current !== "tz=" + zone) {
      document.cookie = "tz=" + zone + "; path=/; max-age=31536000; SameSite=Lax";
    }
  } catch (e) {
    // Old browser without Intl: the pages stay in UTC and say so.
  }
})();
