// Flowline console: shows every <time datetime> in the browser's own time zone (the ISO value stays on hover).
// The console's only script; loaded with defer, no inline script (the Content-Security-Policy forbids it).
"use strict";
(function () {
  function localize(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        el.textContent = when.toLocaleString();
        el.title = el.getAttribute("datetime");
      }
    });
  }
  document.addEventListener("DOMContentLoaded", function () { localize(document); });
})();
