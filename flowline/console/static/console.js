// Flowline console: shows every <time datetime> in the browser's own time zone (the ISO value stays on hover),
// adds copy buttons and fills a new schedule's time zone with the browser's.
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
  // An unfinished run's page (an element with data-poll-key) fetches itself every data-poll-s seconds and reloads
  // only once what it shows has changed, so a reader's focus and scroll stay put meanwhile; a finished run's page
  // has no key, so the checking stops there. Without script, the page's <noscript> meta refresh reloads it.
  function poll(marked) {
    var key = marked.getAttribute("data-poll-key");
    var every = 1000 * Number(marked.getAttribute("data-poll-s"));
    function check() {
      fetch(location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          var next = new DOMParser().parseFromString(html, "text/html").querySelector("[data-poll-key]");
          if (next && next.getAttribute("data-poll-key") === key) {
            setTimeout(check, every);
          } else {
            location.reload();
          }
        })
        .catch(function () { setTimeout(check, every); });
    }
    setTimeout(check, every);
  }
  // A "Copy" button (hidden without script) copies the field it names, such as a webhook's secret.
  function copyButtons(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      var field = document.getElementById(button.getAttribute("data-copy"));
      button.hidden = false;
      button.addEventListener("click", function () {
        field.select();
        var done = function () { button.textContent = "Copied"; };
        if (navigator.clipboard) {
          navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
        } else {
          document.execCommand("copy");
          done();
        }
      });
    });
  }
  // A new schedule's empty time zone becomes the browser's own (without script it stays empty: UTC).
  function browserZone(root) {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    root.querySelectorAll("input[data-browser-zone]").forEach(function (input) {
      if (!input.value && zone) { input.value = zone; }
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    localize(document);
    copyButtons(document);
    browserZone(document);
    var marked = document.querySelector("[data-poll-key]");
    if (marked) { poll(marked); }
  });
})();
