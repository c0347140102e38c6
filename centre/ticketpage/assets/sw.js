// The ticket page's service worker: pages, codes and scripts come from the
// network when it answers and from this phone's cache when it does not, so
// a ticket opens at a congested or dead-zone entrance.
"use strict";
const CACHE = "gated-ticket-v1";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (e) => {
  const u = new URL(e.request.url);
  if (e.request.method !== "GET" || u.origin !== self.location.origin) return;
  if (!u.pathname.startsWith("/t/") && !u.pathname.startsWith("/t-assets/")) return;
  e.respondWith(
    fetch(e.request)
      .then((r) => {
        if (r.ok) {
          const copy = r.clone();
          e.waitUntil(caches.open(CACHE).then((c) => c.put(e.request, copy)));
        }
        return r;
      })
      .catch(() => caches.match(e.request).then((r) => r || Response.error())),
  );
});
