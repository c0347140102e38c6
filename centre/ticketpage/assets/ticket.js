// The rotating ticket: a device key made and kept in this browser, the
// credential the centre bound to it, and a G2: code signed every 15 s
// (docs/token.md §3), all without the network once registered.
"use strict";
(() => {
  const el = document.getElementById("ticket");
  const id = el.dataset.id, access = el.dataset.k, serverDevice = el.dataset.device;
  const canvas = document.getElementById("qr"), status = document.getElementById("status");
  const warning = document.getElementById("warning"), move = document.getElementById("move");
  const REFRESH_MS = 15000;
  const B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

  const b64 = (u8) => btoa(String.fromCharCode(...u8));
  const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const u32 = (n) => Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  };
  function base45(u8) {
    let s = "";
    for (let i = 0; i + 1 < u8.length; i += 2) {
      const n = u8[i] * 256 + u8[i + 1];
      s += B45[n % 45] + B45[Math.floor(n / 45) % 45] + B45[Math.floor(n / 2025)];
    }
    if (u8.length % 2) { const n = u8[u8.length - 1]; s += B45[n % 45] + B45[Math.floor(n / 45)]; }
    return s;
  }

  // IndexedDB keeps the device key as a non-extractable CryptoKey.
  function store(mode, fn) {
    return new Promise((resolve, reject) => {
      const open = indexedDB.open("gated-tickets", 1);
      open.onupgradeneeded = () => open.result.createObjectStore("tickets", { keyPath: "id" });
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const tx = open.result.transaction("tickets", mode);
        const req = fn(tx.objectStore("tickets"));
        tx.oncomplete = () => resolve(req.result);
        tx.onerror = () => reject(tx.error);
      };
    });
  }
  const load = () => store("readonly", (s) => s.get(id));
  const save = (rec) => store("readwrite", (s) => s.put(rec));

  async function register() {
    status.textContent = "Binding the ticket to this phone…";
    let kp;
    try {
      kp = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    } catch (e) {
      throw new Error(`this browser cannot make the ticket's Ed25519 key (${e.name}): open the link in a current browser (Chrome 137+, Firefox 129+, Safari 17+)`);
    }
    const pub = new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey));
    const res = await fetch(`/t/${id}/device?k=${encodeURIComponent(access)}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: b64(pub) }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `the centre answered ${res.status}`);
    const rec = { id, credential: unb64(body.credential), serial: body.serial, publicKey: pub, privateKey: kp.privateKey };
    await save(rec);
    return rec;
  }

  // code signs time t with the device key (RotatingMessage, §3).
  async function code(rec, t) {
    const c = rec.credential;
    const msg = concat(new TextEncoder().encode("GATED-ROT-v1\0"), c.slice(16, 24), c.slice(4, 16), c.slice(24, 26), u32(t));
    const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, rec.privateKey, msg));
    return "G2:" + base45(concat(c, u32(t), sig));
  }

  async function show(rec) {
    const t = Math.floor(Date.now() / 1000);
    const text = await code(rec, t);
    const sym = GatedQR.encode(text);
    const width = Math.min(document.documentElement.clientWidth - 48, 400);
    GatedQR.draw(canvas, sym.modules, Math.max(2, Math.floor(width / (sym.modules.length + 8))));
    canvas.dataset.code = text;
    canvas.dataset.t = String(t);
    status.textContent = `Show this code at the gate · refreshed ${new Date(t * 1000).toLocaleTimeString()}`;
  }

  async function main() {
    let rec = await load();
    if (!rec) rec = await register();
    else if (serverDevice && serverDevice !== b64(rec.publicKey)) {
      warning.textContent = "This ticket has been moved to another phone: the code here will be refused at the gate.";
      warning.hidden = false;
      move.hidden = false;
      move.onclick = async () => {
        move.disabled = true;
        try {
          rec = await register();
          warning.hidden = move.hidden = true;
          await show(rec);
        } catch (e) { fail(e); }
        move.disabled = false;
      };
    }
    await show(rec);
    setInterval(() => show(rec).catch(fail), REFRESH_MS);
    // Keep the screen on while the code is shown; the lock ends when the
    // page is hidden, so take it again on return. Browsers without it: fine.
    const awake = () => navigator.wakeLock?.request("screen").catch(() => {});
    awake();
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) return;
      show(rec).catch(fail);
      awake();
    });
    el.dataset.ready = "1";
  }

  function fail(e) {
    warning.textContent = (e && e.message) || String(e);
    warning.hidden = false;
    status.textContent = "";
    el.dataset.error = warning.textContent;
  }

  if (!window.crypto || !crypto.subtle) fail(new Error("this browser cannot make the ticket's key (no WebCrypto): open the link in a current browser, over HTTPS"));
  else main().catch(fail);
})();
