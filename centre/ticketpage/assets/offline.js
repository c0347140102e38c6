// Keeps this ticket's page and what it shows in the phone's cache (see
// sw.js). document.body.dataset.offline becomes "ready" once it is.
"use strict";
(() => {
  if (!("serviceWorker" in navigator) || !window.caches) return;
  const urls = [location.href, ...[...document.querySelectorAll("script[src], img[src]")].map((e) => e.src),
    ...[...document.querySelectorAll('link[rel="stylesheet"]')].map((e) => e.href)];
  navigator.serviceWorker.register("/t/sw.js", { scope: "/t/" })
    .then(() => caches.open("gated-ticket-v1"))
    .then((c) => c.addAll(urls))
    .then(() => { document.body.dataset.offline = "ready"; })
    .catch((e) => { document.body.dataset.offline = "unavailable: " + e; });
})();
