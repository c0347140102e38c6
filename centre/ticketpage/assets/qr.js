// QR Code encoder (ISO/IEC 18004) for gated's ticket page, written for
// gated (MIT-compatible, no third-party code). Byte and alphanumeric
// modes, error correction level M, versions 1-40, automatic or forced
// mask. gated codes are Base45 text, which is all alphanumeric.
"use strict";
const GatedQR = (() => {
  const ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
  // Level M: error-correction codewords per block and number of blocks.
  const ECC = [-1, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26, 26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28];
  const BLOCKS = [-1, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16, 17, 17, 18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49];
  const FORMAT_M = 0; // level M's two format bits

  function rawModules(v) {
    let r = (16 * v + 128) * v + 64;
    if (v >= 2) {
      const n = Math.floor(v / 7) + 2;
      r -= (25 * n - 10) * n - 55;
      if (v >= 7) r -= 36;
    }
    return r;
  }
  const dataCodewords = (v) => Math.floor(rawModules(v) / 8) - ECC[v] * BLOCKS[v];

  // GF(256) with x^8+x^4+x^3+x^2+1.
  function mul(x, y) {
    let z = 0;
    for (let i = 7; i >= 0; i--) {
      z = (z << 1) ^ ((z >>> 7) * 0x11d);
      z ^= ((y >>> i) & 1) * x;
    }
    return z;
  }
  function divisor(deg) {
    const r = new Array(deg).fill(0);
    r[deg - 1] = 1;
    let root = 1;
    for (let i = 0; i < deg; i++) {
      for (let j = 0; j < deg; j++) {
        r[j] = mul(r[j], root);
        if (j + 1 < deg) r[j] ^= r[j + 1];
      }
      root = mul(root, 2);
    }
    return r;
  }
  function remainder(data, div) {
    const r = div.map(() => 0);
    for (const b of data) {
      const f = b ^ r.shift();
      r.push(0);
      div.forEach((c, i) => { r[i] ^= mul(c, f); });
    }
    return r;
  }

  // segment returns the mode's bits-appender for text.
  function segment(text) {
    if ([...text].every((c) => ALNUM.includes(c))) {
      return { mode: "alphanumeric", indicator: 2, count: text.length, ccBits: (v) => (v <= 9 ? 9 : v <= 26 ? 11 : 13),
        put(bb) {
          let i = 0;
          for (; i + 1 < text.length; i += 2) bb.put(ALNUM.indexOf(text[i]) * 45 + ALNUM.indexOf(text[i + 1]), 11);
          if (i < text.length) bb.put(ALNUM.indexOf(text[i]), 6);
        },
        bits: 11 * Math.floor(text.length / 2) + 6 * (text.length % 2) };
    }
    const bytes = new TextEncoder().encode(text);
    return { mode: "byte", indicator: 4, count: bytes.length, ccBits: (v) => (v <= 9 ? 8 : 16),
      put(bb) { for (const b of bytes) bb.put(b, 8); }, bits: 8 * bytes.length };
  }

  class Bits {
    constructor() { this.a = []; }
    put(val, n) { for (let i = n - 1; i >= 0; i--) this.a.push((val >>> i) & 1); }
  }

  function codewords(seg, v) {
    const bb = new Bits();
    bb.put(seg.indicator, 4);
    bb.put(seg.count, seg.ccBits(v));
    seg.put(bb);
    const cap = dataCodewords(v) * 8;
    bb.put(0, Math.min(4, cap - bb.a.length));
    bb.put(0, (8 - (bb.a.length % 8)) % 8);
    for (let pad = 0xec; bb.a.length < cap; pad ^= 0xec ^ 0x11) bb.put(pad, 8);
    const data = [];
    for (let i = 0; i < bb.a.length; i += 8) data.push(bb.a.slice(i, i + 8).reduce((x, b) => (x << 1) | b, 0));
    // Split into blocks, add error correction, interleave.
    const nb = BLOCKS[v], ecl = ECC[v], raw = Math.floor(rawModules(v) / 8);
    const nShort = nb - (raw % nb), shortLen = Math.floor(raw / nb), div = divisor(ecl);
    const blocks = [];
    for (let i = 0, k = 0; i < nb; i++) {
      const d = data.slice(k, k + shortLen - ecl + (i < nShort ? 0 : 1));
      k += d.length;
      const e = remainder(d, div);
      if (i < nShort) d.push(0);
      blocks.push(d.concat(e));
    }
    const out = [];
    for (let i = 0; i < blocks[0].length; i++) {
      blocks.forEach((b, j) => { if (i !== shortLen - ecl || j >= nShort) out.push(b[i]); });
    }
    return out;
  }

  function alignment(v) {
    if (v === 1) return [];
    const n = Math.floor(v / 7) + 2;
    const step = v === 32 ? 26 : Math.ceil((v * 4 + 4) / (n * 2 - 2)) * 2;
    const r = [6];
    for (let p = v * 4 + 10; r.length < n; p -= step) r.splice(1, 0, p);
    return r;
  }

  const bit = (x, i) => ((x >>> i) & 1) !== 0;

  function masked(m, x, y) {
    switch (m) {
      case 0: return (x + y) % 2 === 0;
      case 1: return y % 2 === 0;
      case 2: return x % 3 === 0;
      case 3: return (x + y) % 3 === 0;
      case 4: return (Math.floor(x / 3) + Math.floor(y / 2)) % 2 === 0;
      case 5: return ((x * y) % 2) + ((x * y) % 3) === 0;
      case 6: return (((x * y) % 2) + ((x * y) % 3)) % 2 === 0;
      default: return (((x + y) % 2) + ((x * y) % 3)) % 2 === 0;
    }
  }

  function build(v, data, mask) {
    const n = 4 * v + 17;
    const mod = Array.from({ length: n }, () => new Array(n).fill(false));
    const fn = Array.from({ length: n }, () => new Array(n).fill(false));
    const set = (x, y, d) => { mod[y][x] = d; fn[y][x] = true; };
    for (let i = 0; i < n; i++) { set(6, i, i % 2 === 0); set(i, 6, i % 2 === 0); }
    for (const [cx, cy] of [[3, 3], [n - 4, 3], [3, n - 4]]) {
      for (let dy = -4; dy <= 4; dy++) for (let dx = -4; dx <= 4; dx++) {
        const d = Math.max(Math.abs(dx), Math.abs(dy)), x = cx + dx, y = cy + dy;
        if (x >= 0 && x < n && y >= 0 && y < n) set(x, y, d !== 2 && d !== 4);
      }
    }
    const al = alignment(v);
    al.forEach((ay, i) => al.forEach((ax, j) => {
      if ((i === 0 && j === 0) || (i === 0 && j === al.length - 1) || (i === al.length - 1 && j === 0)) return;
      for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) set(ax + dx, ay + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
    }));
    const format = (m) => {
      const d = (FORMAT_M << 3) | m;
      let r = d;
      for (let i = 0; i < 10; i++) r = (r << 1) ^ ((r >>> 9) * 0x537);
      const b = ((d << 10) | r) ^ 0x5412;
      for (let i = 0; i <= 5; i++) set(8, i, bit(b, i));
      set(8, 7, bit(b, 6)); set(8, 8, bit(b, 7)); set(7, 8, bit(b, 8));
      for (let i = 9; i < 15; i++) set(14 - i, 8, bit(b, i));
      for (let i = 0; i < 8; i++) set(n - 1 - i, 8, bit(b, i));
      for (let i = 8; i < 15; i++) set(8, n - 15 + i, bit(b, i));
      set(8, n - 8, true);
    };
    format(0);
    if (v >= 7) {
      let r = v;
      for (let i = 0; i < 12; i++) r = (r << 1) ^ ((r >>> 11) * 0x1f25);
      const b = (v << 12) | r;
      for (let i = 0; i < 18; i++) {
        const a = n - 11 + (i % 3), c = Math.floor(i / 3);
        set(a, c, bit(b, i)); set(c, a, bit(b, i));
      }
    }
    let k = 0;
    for (let right = n - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5;
      for (let vert = 0; vert < n; vert++) {
        for (let j = 0; j < 2; j++) {
          const x = right - j, y = ((right + 1) & 2) === 0 ? n - 1 - vert : vert;
          if (!fn[y][x] && k < data.length * 8) { mod[y][x] = bit(data[k >>> 3], 7 - (k & 7)); k++; }
        }
      }
    }
    const apply = (m) => {
      for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) if (!fn[y][x] && masked(m, x, y)) mod[y][x] = !mod[y][x];
    };
    if (mask === undefined) {
      let best = Infinity;
      for (let m = 0; m < 8; m++) {
        apply(m); format(m);
        const p = penalty(mod);
        if (p < best) { best = p; mask = m; }
        apply(m);
      }
    }
    apply(mask);
    format(mask);
    return { modules: mod, mask };
  }

  // penalty scores a masked symbol by the standard's four rules.
  function penalty(m) {
    const n = m.length;
    let p = 0, dark = 0;
    const finder = (line) => {
      let s = 0;
      for (let i = 0; i + 7 <= n; i++) {
        if (line(i) && !line(i + 1) && line(i + 2) && line(i + 3) && line(i + 4) && !line(i + 5) && line(i + 6)) {
          const light = (a, b) => { for (let j = a; j < b; j++) if (j >= 0 && j < n && line(j)) return false; return a >= 0 && b <= n; };
          if (light(i - 4, i) || light(i + 7, i + 11)) s += 40;
        }
      }
      return s;
    };
    for (let y = 0; y < n; y++) {
      for (const get of [(i) => m[y][i], (i) => m[i][y]]) {
        let run = 1;
        for (let i = 1; i <= n; i++) {
          if (i < n && get(i) === get(i - 1)) { run++; continue; }
          if (run >= 5) p += 3 + run - 5;
          run = 1;
        }
        p += finder(get);
      }
      for (let x = 0; x < n; x++) {
        if (m[y][x]) dark++;
        if (x + 1 < n && y + 1 < n && m[y][x] === m[y][x + 1] && m[y][x] === m[y + 1][x] && m[y][x] === m[y + 1][x + 1]) p += 3;
      }
    }
    return p + Math.floor(Math.abs(dark * 2 - n * n) * 10 / (n * n)) * 10;
  }

  // encode returns {version, mode, mask, modules} for text at level M.
  // opts.mask forces a mask (0-7), for tests against another encoder.
  function encode(text, opts = {}) {
    const seg = segment(text);
    for (let v = 1; v <= 40; v++) {
      if (4 + seg.ccBits(v) + seg.bits <= dataCodewords(v) * 8 && seg.count < 1 << seg.ccBits(v)) {
        const s = build(v, codewords(seg, v), opts.mask);
        return { version: v, mode: seg.mode, mask: s.mask, modules: s.modules };
      }
    }
    throw new Error("text too long for a QR code at level M");
  }

  // draw paints a symbol on a canvas, scale pixels a module, with the
  // four-module quiet zone.
  function draw(canvas, modules, scale) {
    const n = modules.length, q = 4, px = (n + 2 * q) * scale;
    canvas.width = canvas.height = px;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, px, px);
    ctx.fillStyle = "#000";
    for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) if (modules[y][x]) ctx.fillRect((x + q) * scale, (y + q) * scale, scale, scale);
  }

  return { encode, draw };
})();
if (typeof module !== "undefined") module.exports = GatedQR;
