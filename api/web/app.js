// Bourse trading page. Plain JavaScript, no dependencies.
//
// Money never goes through a float: prices and amounts stay the decimal strings the API sends,
// compared and summed as BigInt integers scaled to the pair's decimals. JS numbers are used only
// for chart pixel positions.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const BOOK_ROWS = 16;
  const TRADES_KEPT = 60;
  const FILLS_KEPT = 40;
  const CANDLES_KEPT = 240;

  // ---------------------------------------------------------------- decimals

  /** Parses a non-negative decimal string into a BigInt scaled by 10^dec. */
  function toUnits(s, dec) {
    s = String(s).trim();
    if (!/^\d+(\.\d*)?$|^\.\d+$/.test(s)) throw new Error("not a decimal: " + s);
    let [i, f = ""] = s.split(".");
    if (f.length > dec) throw new Error("too many decimals: " + s);
    f = f.padEnd(dec, "0");
    return BigInt((i || "0") + f);
  }

  /** Formats a BigInt scaled by 10^dec as a decimal string with exactly dec places. */
  function fromUnits(n, dec) {
    const neg = n < 0n;
    let s = (neg ? -n : n).toString().padStart(dec + 1, "0");
    const out = dec > 0 ? s.slice(0, s.length - dec) + "." + s.slice(s.length - dec) : s;
    return (neg ? "-" : "") + out;
  }

  /** Groups the integer part with thin spaces, for reading. */
  function pretty(s) {
    if (s === null || s === undefined) return "-";
    const [i, f] = String(s).split(".");
    const g = i.replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009");
    return f === undefined ? g : g + "." + f;
  }

  /** Number of decimals written in a decimal string. */
  function decOf(s) {
    const k = String(s).indexOf(".");
    return k < 0 ? 0 : String(s).length - k - 1;
  }

  /** Chart-only conversion: a decimal string to a JS number (pixels, never money). */
  const num = (s) => (s === null || s === undefined ? NaN : Number(s));

  // ---------------------------------------------------------------- CRC32 (book checksum)

  const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      t[n] = c >>> 0;
    }
    return t;
  })();

  function crc32(str) {
    let c = 0xffffffff;
    for (let i = 0; i < str.length; i++) c = CRC_TABLE[(c ^ str.charCodeAt(i)) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  /** The Kraken-style field: the string as sent without the decimal point and leading zeros. */
  const ckField = (s) => s.replace(".", "").replace(/^0+/, "");

  // ---------------------------------------------------------------- state

  const st = {
    pairs: [], // from GET /v1/pairs
    pairBy: {},
    currencies: {}, // code -> {minorAmountDecimals}
    tickers: {}, // pair -> ticker object
    pair: null, // selected pair symbol
    interval: "1m",
    book: null, // {pair, seq, bids: Map(priceStr -> amountStr), asks: Map, ready}
    trades: [],
    candles: [],
    auth: null, // {clientId, clientSecret, token, expiresAt}
    orders: new Map(), // open orders by id
    finalOrders: new Set(), // ids seen in a final state: a late "open" message must not revive them
    fills: [],
    balances: new Map(),
    ws: null,
    wsId: 0,
    wsUp: false,
    wsAuthed: false,
    subs: new Set(), // channels we want
    backoff: 500,
    dirty: { book: false, candles: false, depth: false },
  };

  // ---------------------------------------------------------------- REST

  async function api(method, path, body, opts = {}) {
    const headers = { Accept: "application/json" };
    let payload;
    if (opts.form) {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      payload = new URLSearchParams(body).toString();
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    if (opts.auth !== false && st.auth && st.auth.token) headers.Authorization = "Bearer " + st.auth.token;
    const res = await fetch(path, { method, headers, body: payload });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
    if (!res.ok) {
      if (res.status === 401 && opts.auth !== false && st.auth && !opts.retried) {
        // The token expired: log in again with the same credentials, once.
        await fetchToken(st.auth.clientId, st.auth.clientSecret);
        return api(method, path, body, Object.assign({}, opts, { retried: true }));
      }
      const err = new Error(problemText(res.status, json, text));
      err.status = res.status;
      err.body = json;
      throw err;
    }
    return json;
  }

  function problemText(status, json, text) {
    if (json && json.code) return json.code + (json.detail ? ": " + json.detail : "");
    if (json && json.error) return json.error + (json.error_description ? ": " + json.error_description : "");
    if (json && json.title) return json.title;
    return "HTTP " + status + (text ? ": " + text.slice(0, 120) : "");
  }

  // ---------------------------------------------------------------- WebSocket

  function wsUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws";
  }

  function connect() {
    const ws = new WebSocket(wsUrl());
    st.ws = ws;
    ws.onopen = () => {
      st.wsUp = true;
      st.backoff = 500;
      setConn();
      if (st.auth && st.auth.token) sendAuth();
      const chans = [...st.subs].filter((c) => !isPrivate(c));
      if (chans.length) send({ op: "subscribe", channels: chans });
      if (st.book) st.book.ready = false;
    };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (_) { return; }
      onMessage(m);
    };
    ws.onclose = () => {
      if (st.ws !== ws) return;
      st.wsUp = false;
      st.wsAuthed = false;
      setConn();
      setTimeout(connect, st.backoff);
      st.backoff = Math.min(st.backoff * 2, 10000);
    };
    ws.onerror = () => ws.close();
  }

  function send(msg) {
    if (!st.ws || st.ws.readyState !== 1) return;
    msg.id = ++st.wsId;
    st.ws.send(JSON.stringify(msg));
  }

  const isPrivate = (c) => c === "orders" || c === "fills" || c === "wallet";

  function subscribe(chans) {
    chans.forEach((c) => st.subs.add(c));
    const now = chans.filter((c) => !isPrivate(c) || st.wsAuthed);
    if (now.length) send({ op: "subscribe", channels: now });
  }

  function unsubscribe(chans) {
    chans.forEach((c) => st.subs.delete(c));
    if (chans.length) send({ op: "unsubscribe", channels: chans });
  }

  function sendAuth() {
    send({ op: "auth", token: st.auth.token });
  }

  function setConn() {
    const c = $("conn");
    c.textContent = st.wsUp ? (st.wsAuthed ? "live \u00b7 authed" : "live") : "offline";
    c.className = "conn " + (st.wsUp ? "up" : "down");
  }

  function onMessage(m) {
    if (m.op) {
      if (m.op === "authenticated") {
        st.wsAuthed = true;
        setConn();
        const priv = [...st.subs].filter(isPrivate);
        if (priv.length) send({ op: "subscribe", channels: priv });
      } else if (m.op === "error") {
        console.warn("ws error", m);
        if (m.code === "UNAUTHORIZED" && st.auth) fetchToken(st.auth.clientId, st.auth.clientSecret).then(sendAuth, () => {});
      }
      return;
    }
    const ch = m.channel;
    if (!ch) return;
    const parts = ch.split(":");
    switch (parts[0]) {
      case "ticker": onTicker(m.data); break;
      case "book": onBook(parts[1], m); break;
      case "trades": if (parts[1] === st.pair) onTrade(m.data); break;
      case "candles": if (parts[2] === st.pair && parts[1] === st.interval) onCandle(m.data); break;
      case "orders": onOrder(m.data); break;
      case "fills": onFill(m.data); break;
      case "wallet": onBalance(m.data); break;
    }
  }

  // ---------------------------------------------------------------- tickers

  function renderTickerStrip() {
    const nav = $("tickers");
    nav.textContent = "";
    for (const p of st.pairs) {
      const el = document.createElement("div");
      el.className = "ticker";
      el.id = "ticker-" + p.pair;
      el.dataset.testid = "ticker-" + p.pair;
      el.dataset.updates = "0";
      el.innerHTML = '<div class="tp"></div><div class="tl" data-testid="ticker-last"></div><div class="tr"></div>';
      el.querySelector(".tp").textContent = p.base + "/" + p.quote + (p.status === "halted" ? " (halted)" : "");
      el.onclick = () => selectPair(p.pair);
      nav.appendChild(el);
      paintTicker(p.pair);
    }
  }

  function onTicker(t) {
    if (!t || !t.pair) return;
    const prev = st.tickers[t.pair];
    st.tickers[t.pair] = t;
    const el = $("ticker-" + t.pair);
    if (el) {
      el.dataset.updates = String(Number(el.dataset.updates || 0) + 1);
      if (prev && prev.lastPrice && t.lastPrice && prev.lastPrice !== t.lastPrice) {
        const d = Math.max(decOf(t.lastPrice), decOf(prev.lastPrice));
        const up = toUnits(t.lastPrice, d) > toUnits(prev.lastPrice, d);
        el.classList.remove("up", "down");
        void el.offsetWidth;
        el.classList.add(up ? "up" : "down");
        clearTimeout(el._t);
        el._t = setTimeout(() => el.classList.remove("up", "down"), 600);
      }
    }
    paintTicker(t.pair);
    if (t.pair === st.pair) paintStats();
  }

  function paintTicker(pair) {
    const el = $("ticker-" + pair);
    if (!el) return;
    el.classList.toggle("sel", pair === st.pair);
    const t = st.tickers[pair];
    el.querySelector(".tl").textContent = t && t.lastPrice ? pretty(t.lastPrice) : "no trades";
    el.querySelector(".tr").textContent = t ? pretty(t.bestBid) + " / " + pretty(t.bestAsk) : "";
  }

  function paintStats() {
    const t = st.tickers[st.pair] || {};
    const p = st.pairBy[st.pair];
    $("stat-last").textContent = pretty(t.lastPrice);
    $("stat-high").textContent = pretty(t.high);
    $("stat-low").textContent = pretty(t.low);
    $("stat-volume").textContent = t.baseVolume ? pretty(t.baseVolume) + " " + p.base : "-";
  }

  // ---------------------------------------------------------------- pair selection

  function pairChannels(pair, iv) {
    return ["book:" + pair, "trades:" + pair, "candles:" + iv + ":" + pair];
  }

  async function selectPair(pair) {
    if (!st.pairBy[pair]) pair = st.pairs[0].pair;
    if (st.pair === pair) return;
    const old = st.pair;
    if (old) unsubscribe(pairChannels(old, st.interval));
    st.pair = pair;
    if (location.hash !== "#" + pair) history.replaceState(null, "", "#" + pair);
    const p = st.pairBy[pair];
    $("pair-name").textContent = p.base + " / " + p.quote;
    $("book-title").textContent = "Order book " + p.base + "/" + p.quote;
    $("order-price-unit").textContent = p.quote;
    $("order-amount-unit").textContent = p.base + " (min " + p.minAmount + ")";
    document.title = "Bourse \u00b7 " + p.pair;
    st.pairs.forEach((q) => paintTicker(q.pair));
    paintStats();
    st.book = { pair, seq: null, bids: new Map(), asks: new Map(), ready: false };
    st.trades = [];
    st.candles = [];
    renderBook();
    renderTrades();
    subscribe(pairChannels(pair, st.interval));
    loadTrades(pair);
    loadCandles(pair, st.interval);
    renderOrders();
  }

  async function loadTrades(pair) {
    try {
      const list = await api("GET", "/v1/pairs/" + pair + "/trades?limit=" + TRADES_KEPT, undefined, { auth: false });
      if (st.pair !== pair) return;
      // Keep any trade the WebSocket already delivered.
      const seen = new Set(st.trades.map((t) => t.id));
      st.trades = st.trades.concat((list || []).filter((t) => !seen.has(t.id))).slice(0, TRADES_KEPT);
      renderTrades();
    } catch (e) { console.warn("trades", e); }
  }

  async function loadCandles(pair, iv) {
    try {
      const list = await api("GET", "/v1/pairs/" + pair + "/candles?interval=" + iv + "&limit=" + CANDLES_KEPT, undefined, { auth: false });
      if (st.pair !== pair || st.interval !== iv) return;
      const byTime = new Map((list || []).map((c) => [c.openTime, c]));
      for (const c of st.candles) byTime.set(c.openTime, c);
      st.candles = [...byTime.values()].sort((a, b) => (a.openTime < b.openTime ? -1 : 1)).slice(-CANDLES_KEPT);
      markDirty("candles");
    } catch (e) { console.warn("candles", e); }
  }

  function setInterval_(iv) {
    if (iv === st.interval) return;
    unsubscribe(["candles:" + st.interval + ":" + st.pair]);
    st.interval = iv;
    st.candles = [];
    document.querySelectorAll("#intervals button").forEach((b) => b.classList.toggle("on", b.dataset.iv === iv));
    subscribe(["candles:" + iv + ":" + st.pair]);
    loadCandles(st.pair, iv);
    markDirty("candles");
  }

  // ---------------------------------------------------------------- order book

  function onBook(pair, m) {
    const b = st.book;
    if (!b || b.pair !== pair) return;
    const d = m.data || {};
    if (m.type === "snapshot") {
      b.bids = new Map();
      b.asks = new Map();
      applyLevels(b.bids, d.bids, pair);
      applyLevels(b.asks, d.asks, pair);
      b.seq = m.seq;
      b.ready = true;
    } else {
      if (!b.ready) return; // waiting for the snapshot of a resubscription
      if (b.seq !== null && m.seq !== b.seq + 1) {
        console.warn("book " + pair + ": seq gap " + b.seq + " -> " + m.seq + ", resubscribing");
        return resyncBook(pair);
      }
      b.seq = m.seq;
      applyLevels(b.bids, d.bids, pair);
      applyLevels(b.asks, d.asks, pair);
    }
    if (typeof m.checksum === "number") {
      const mine = bookChecksum(b, pair);
      if (mine !== m.checksum) {
        console.warn("book " + pair + ": checksum " + mine + " != " + m.checksum + " at seq " + m.seq + ", resubscribing");
        return resyncBook(pair);
      }
    }
    $("book-seq").textContent = "seq " + b.seq;
    markDirty("book");
  }

  /**
   * Applies absolute levels to one side. A level is kept as {p, a, u, q}: the price and amount
   * strings exactly as sent (for display and the checksum) and both as BigInt units, parsed once.
   */
  function applyLevels(map, levels, pair) {
    if (!levels) return;
    const { priceDecimals: pd, amountDecimals: ad } = st.pairBy[pair];
    for (const [p, a] of levels) {
      const q = toUnits(a, Math.max(ad, decOf(a)));
      if (q === 0n) map.delete(p);
      else map.set(p, { p, a, q, u: toUnits(p, Math.max(pd, decOf(p))) });
    }
  }

  function resyncBook(pair) {
    const b = st.book;
    b.ready = false;
    b.seq = null;
    b.resyncs = (b.resyncs || 0) + 1;
    send({ op: "unsubscribe", channels: ["book:" + pair] });
    send({ op: "subscribe", channels: ["book:" + pair] });
  }

  /**
   * The best k levels: asks lowest first, bids highest first, prices compared as integers.
   * A small k is a single pass with insertion into a short list, so a deep book costs O(n k)
   * per message rather than a full sort.
   */
  function bestLevels(map, desc, k) {
    const better = (x, y) => (desc ? x.u > y.u : x.u < y.u);
    if (k > 32) {
      const all = [...map.values()];
      all.sort((x, y) => (x.u === y.u ? 0 : better(x, y) ? -1 : 1));
      return all.slice(0, k);
    }
    const top = [];
    for (const l of map.values()) {
      if (top.length === k && !better(l, top[k - 1])) continue;
      let i = top.length < k ? top.length : k - 1;
      top[i] = l;
      while (i > 0 && better(top[i], top[i - 1])) { [top[i], top[i - 1]] = [top[i - 1], top[i]]; i--; }
    }
    return top;
  }

  function bookChecksum(b, pair) {
    const asks = bestLevels(b.asks, false, 10);
    const bids = bestLevels(b.bids, true, 10);
    let s = "";
    for (const l of asks) s += ckField(l.p) + ckField(l.a);
    for (const l of bids) s += ckField(l.p) + ckField(l.a);
    return crc32(s);
  }

  function myPrices() {
    const s = new Set();
    for (const o of st.orders.values()) if (o.pair === st.pair && o.price) s.add(o.side + ":" + o.price);
    return s;
  }

  function renderBook() {
    const b = st.book;
    const asksEl = $("book-asks"), bidsEl = $("book-bids");
    if (!b) return;
    const p = st.pairBy[b.pair];
    const adec = p.amountDecimals;
    const asks = bestLevels(b.asks, false, BOOK_ROWS);
    const bids = bestLevels(b.bids, true, BOOK_ROWS);
    // Running totals (BigInt in lots), the bar width is pixel math only.
    const cum = (levels) => { let t = 0n; return levels.map((l) => (t += l.q)); };
    const ac = cum(asks), bc = cum(bids);
    const maxTot = Number([...ac, ...bc].reduce((m, x) => (x > m ? x : m), 1n));
    const mine = myPrices();
    const rows = (levels, totals, side) => {
      const frag = document.createDocumentFragment();
      levels.forEach((l, i) => {
        const r = document.createElement("div");
        r.className = "lvl" + (mine.has(side + ":" + l.p) ? " mine" : "");
        r.dataset.price = l.p;
        r.dataset.amount = l.a;
        r.dataset.testid = "level";
        const w = (100 * Number(totals[i])) / maxTot;
        r.innerHTML = '<div class="bar" style="width:' + w.toFixed(1) + '%"></div><span class="p"></span><span></span><span></span>';
        const s = r.querySelectorAll("span");
        s[0].textContent = pretty(l.p);
        s[1].textContent = l.a;
        s[2].textContent = fromUnits(totals[i], adec);
        r.onclick = () => { $("order-price").value = l.p; updateTotal(); };
        frag.appendChild(r);
      });
      return frag;
    };
    asksEl.textContent = "";
    // Asks are shown highest at the top, so the best ask sits right above the spread.
    const askRows = rows(asks, ac, "sell");
    [...askRows.childNodes].reverse().forEach((n) => asksEl.appendChild(n));
    bidsEl.textContent = "";
    bidsEl.appendChild(rows(bids, bc, "buy"));
    const sp = $("book-spread");
    if (asks.length && bids.length) {
      const pd = p.priceDecimals;
      const spread = asks[0].u - bids[0].u;
      const t = st.tickers[b.pair];
      sp.innerHTML = "<b></b> &nbsp;spread <span></span>";
      sp.querySelector("b").textContent = pretty(t && t.lastPrice ? t.lastPrice : fromUnits((asks[0].u + bids[0].u) / 2n, pd));
      sp.querySelector("span").textContent = pretty(fromUnits(spread, pd));
    } else {
      sp.textContent = b.ready ? "empty side" : "loading\u2026";
    }
  }

  // ---------------------------------------------------------------- trades

  function onTrade(t) {
    if (st.trades.some((x) => x.id === t.id)) return;
    st.trades.unshift(t);
    if (st.trades.length > TRADES_KEPT) st.trades.length = TRADES_KEPT;
    renderTrades(t.id);
  }

  function renderTrades(newId) {
    const tb = $("trades").tBodies[0];
    tb.textContent = "";
    for (const t of st.trades) {
      const tr = tb.insertRow();
      if (t.id === newId) tr.className = "new";
      cell(tr, pretty(t.price), t.side);
      cell(tr, t.amount);
      cell(tr, (t.timestamp || "").slice(11, 19));
    }
  }

  function cell(tr, text, cls) {
    const td = tr.insertCell();
    td.textContent = text === null || text === undefined ? "-" : text;
    if (cls) td.className = cls;
    return td;
  }

  // ---------------------------------------------------------------- candles

  function onCandle(c) {
    const last = st.candles[st.candles.length - 1];
    if (last && last.openTime === c.openTime) st.candles[st.candles.length - 1] = c;
    else if (!last || c.openTime > last.openTime) {
      st.candles.push(c);
      if (st.candles.length > CANDLES_KEPT) st.candles.shift();
    } else {
      const i = st.candles.findIndex((x) => x.openTime === c.openTime);
      if (i >= 0) st.candles[i] = c;
    }
    markDirty("candles");
  }

  function setupCanvas(cv) {
    const dpr = window.devicePixelRatio || 1;
    // The CSS fixes the displayed size; the backing store follows it at the device pixel ratio.
    const w = cv.clientWidth, h = cv.clientHeight;
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
      cv.width = Math.round(w * dpr);
      cv.height = Math.round(h * dpr);
    }
    const g = cv.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = "11px " + getComputedStyle(document.body).fontFamily;
    return { g, w, h };
  }

  const css = (v) => getComputedStyle(document.documentElement).getPropertyValue(v).trim();

  function drawCandles() {
    const { g, w, h } = setupCanvas($("candle-chart"));
    const cs = st.candles;
    const axisW = 70, volH = 40, top = 10, bottom = 18;
    if (!cs.length) {
      g.fillStyle = css("--muted");
      g.fillText("no trades yet in this interval", 12, 20);
      return;
    }
    const n = Math.max(cs.length, 60);
    const slot = (w - axisW) / n;
    let lo = Infinity, hi = -Infinity, vmax = 0;
    for (const c of cs) { lo = Math.min(lo, num(c.low)); hi = Math.max(hi, num(c.high)); vmax = Math.max(vmax, num(c.baseVolume)); }
    if (hi === lo) { hi += 1; lo -= 1; }
    const pad = (hi - lo) * 0.05; hi += pad; lo -= pad;
    const ph = h - top - bottom - volH;
    const y = (v) => top + ((hi - v) / (hi - lo)) * ph;
    // grid + price axis
    g.strokeStyle = css("--line"); g.fillStyle = css("--muted"); g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4, yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(0, yy); g.lineTo(w - axisW, yy); g.stroke();
      g.fillText(v.toPrecision(7), w - axisW + 4, yy + 4);
    }
    const x0 = (w - axisW) - cs.length * slot;
    cs.forEach((c, i) => {
      const x = x0 + i * slot + slot / 2;
      const o = num(c.open), cl = num(c.close), up = cl >= o;
      g.strokeStyle = g.fillStyle = up ? css("--buy") : css("--sell");
      g.beginPath(); g.moveTo(Math.round(x) + 0.5, y(num(c.high))); g.lineTo(Math.round(x) + 0.5, y(num(c.low))); g.stroke();
      const bw = Math.max(1, slot * 0.7);
      const yt = y(Math.max(o, cl)), yb = y(Math.min(o, cl));
      g.fillRect(x - bw / 2, yt, bw, Math.max(1, yb - yt));
      const vh = vmax > 0 ? (num(c.baseVolume) / vmax) * (volH - 4) : 0;
      g.globalAlpha = 0.35; g.fillRect(x - bw / 2, h - bottom - vh, bw, vh); g.globalAlpha = 1;
    });
    // time labels
    g.fillStyle = css("--muted");
    let lastLabel = -Infinity;
    cs.forEach((c, i) => {
      const x = x0 + i * slot;
      if (x - lastLabel < 70) return;
      g.fillText(c.openTime.slice(11, 16), x, h - 4);
      lastLabel = x;
    });
    // last price line
    const last = num(cs[cs.length - 1].close), yl = Math.round(y(last)) + 0.5;
    g.strokeStyle = css("--accent"); g.setLineDash([3, 3]);
    g.beginPath(); g.moveTo(0, yl); g.lineTo(w - axisW, yl); g.stroke(); g.setLineDash([]);
    g.fillStyle = css("--accent"); g.fillRect(w - axisW, yl - 8, axisW, 16);
    g.fillStyle = "#000"; g.fillText(cs[cs.length - 1].close, w - axisW + 4, yl + 4);
  }

  function drawDepth() {
    const { g, w, h } = setupCanvas($("depth-chart"));
    const b = st.book;
    if (!b || !b.ready) return;
    const p = st.pairBy[b.pair];
    const bids = bestLevels(b.bids, true, 100);
    const asks = bestLevels(b.asks, false, 100);
    if (!bids.length && !asks.length) { g.fillStyle = css("--muted"); g.fillText("empty book", 12, 20); return; }
    const adec = p.amountDecimals;
    const cumul = (ls) => { let t = 0n; return ls.map((l) => ({ x: num(l.p), c: (t += l.q) })); };
    const bc = cumul(bids), ac = cumul(asks);
    const scale = 10 ** adec;
    const maxC = Math.max(bc.length ? Number(bc[bc.length - 1].c) : 0, ac.length ? Number(ac[ac.length - 1].c) : 0) / scale || 1;
    const mid = bids.length && asks.length ? (num(bids[0].p) + num(asks[0].p)) / 2 : num((bids[0] || asks[0]).p);
    const span = Math.max(bc.length ? mid - bc[bc.length - 1].x : 0, ac.length ? ac[ac.length - 1].x - mid : 0) || mid * 0.01 || 1;
    const top = 8, bottom = 16;
    const X = (v) => ((v - (mid - span)) / (2 * span)) * w;
    const Y = (c) => h - bottom - (Number(c) / scale / maxC) * (h - top - bottom);
    const area = (pts, color, dir) => {
      if (!pts.length) return;
      g.beginPath();
      g.moveTo(X(pts[0].x), h - bottom);
      let prevY = h - bottom;
      for (const pt of pts) { const xx = X(pt.x); g.lineTo(xx, prevY); prevY = Y(pt.c); g.lineTo(xx, prevY); }
      g.lineTo(dir < 0 ? 0 : w, prevY);
      g.lineTo(dir < 0 ? 0 : w, h - bottom);
      g.closePath();
      g.globalAlpha = 0.2; g.fillStyle = color; g.fill(); g.globalAlpha = 1;
      g.strokeStyle = color; g.lineWidth = 1.5; g.stroke();
    };
    area(bc, css("--buy"), -1);
    area(ac, css("--sell"), 1);
    g.fillStyle = css("--muted");
    g.fillText((mid - span).toPrecision(7), 2, h - 3);
    const r = (mid + span).toPrecision(7);
    g.fillText(r, w - g.measureText(r).width - 2, h - 3);
    const mtxt = "mid " + mid.toPrecision(7);
    g.fillText(mtxt, w / 2 - g.measureText(mtxt).width / 2, h - 3);
  }

  // Redraws are batched into animation frames: a busy market sends many book updates per frame.
  function markDirty(what) {
    if (what === "book") { st.dirty.book = true; st.dirty.depth = true; } else st.dirty[what] = true;
    if (!st.raf) st.raf = requestAnimationFrame(frame);
  }

  function frame() {
    st.raf = 0;
    if (st.dirty.book) { st.dirty.book = false; renderBook(); }
    if (st.dirty.depth) { st.dirty.depth = false; drawDepth(); }
    if (st.dirty.candles) { st.dirty.candles = false; drawCandles(); }
  }

  // ---------------------------------------------------------------- account

  async function fetchToken(clientId, clientSecret) {
    const tok = await api("POST", "/v1/oauth2/token",
      { grant_type: "client_credentials", client_id: clientId, client_secret: clientSecret },
      { form: true, auth: false });
    st.auth = { clientId, clientSecret, token: tok.access_token, expiresAt: Date.now() + (tok.expires_in || 3600) * 1000 };
    clearTimeout(st.refreshTimer);
    // Refresh ahead of expiry, and re-authenticate the WebSocket with the new token.
    st.refreshTimer = setTimeout(() => fetchToken(clientId, clientSecret).then(sendAuth, () => {}), Math.max(10, (tok.expires_in || 3600) * 0.8) * 1000);
    return tok;
  }

  async function login(clientId, clientSecret) {
    setStatus("login-status", "logging in\u2026");
    try {
      await fetchToken(clientId, clientSecret);
    } catch (e) {
      st.auth = null;
      setStatus("login-status", e.message, "err");
      return false;
    }
    try { sessionStorage.setItem("bourse.creds", JSON.stringify({ clientId, clientSecret })); } catch (_) {}
    $("login-form").hidden = true;
    $("logged-in").hidden = false;
    $("logged-in-as").textContent = clientId;
    setStatus("login-status", "logged in", "ok");
    st.orders.clear();
    st.finalOrders.clear();
    st.balances.clear();
    st.fills = [];
    ["orders", "fills", "wallet"].forEach((c) => st.subs.add(c));
    if (st.wsUp) sendAuth();
    await Promise.all([loadWallet(), loadOpenOrders(), loadFills()]);
    return true;
  }

  function logout() {
    unsubscribe(["orders", "fills", "wallet"]);
    st.auth = null;
    st.wsAuthed = false;
    clearTimeout(st.refreshTimer);
    try { sessionStorage.removeItem("bourse.creds"); } catch (_) {}
    // A fresh connection drops the authentication of the old one.
    if (st.ws) st.ws.close();
    st.orders.clear();
    st.balances.clear();
    st.fills = [];
    $("login-form").hidden = false;
    $("logged-in").hidden = true;
    setStatus("login-status", "");
    renderOrders(); renderBalances(); renderFills();
  }

  async function registerDemo() {
    setStatus("login-status", "registering\u2026");
    try {
      const name = "web-" + randomId(6);
      const u = await api("POST", "/v1/users", { name }, { auth: false });
      $("login-client-id").value = u.clientId;
      $("login-client-secret").value = u.clientSecret;
      if (!(await login(u.clientId, u.clientSecret))) return;
      // Fund it: in the demo, deposits are approved at once.
      const amounts = { BTC: "2", ETH: "40", SEK: "2000000", USDC: "200000" };
      const done = [];
      for (const code of Object.keys(st.currencies)) {
        const amount = amounts[code] || "1000";
        try {
          const r = await api("POST", "/v1/wallet/deposits", { currency: code, amount, externalId: "web-" + randomId(10) });
          done.push(code + " " + r.status);
        } catch (e) { done.push(code + " " + e.message); }
      }
      await loadWallet();
      setStatus("login-status", "registered " + u.clientId + " (secret shown above, kept in this tab only); deposits: " + done.join(", "), "ok");
      $("login-client-secret").type = "text";
    } catch (e) {
      setStatus("login-status", e.message, "err");
    }
  }

  async function loadWallet() {
    try {
      const w = await api("GET", "/v1/wallet");
      for (const b of w.balances || []) st.balances.set(b.currency, b);
      renderBalances();
    } catch (e) { setStatus("login-status", "wallet: " + e.message, "err"); }
  }

  async function loadOpenOrders() {
    try {
      const r = await api("GET", "/v1/orders?status=open&limit=1000");
      for (const o of r.data || []) if (!st.finalOrders.has(o.id)) st.orders.set(o.id, o);
      renderOrders();
    } catch (e) { setStatus("login-status", "orders: " + e.message, "err"); }
  }

  async function loadFills() {
    try {
      const r = await api("GET", "/v1/fills?limit=" + FILLS_KEPT);
      const seen = new Set(st.fills.map((f) => f.tradeId + f.orderId));
      st.fills = st.fills.concat((r.data || []).filter((f) => !seen.has(f.tradeId + f.orderId))).slice(0, FILLS_KEPT);
      renderFills();
    } catch (e) { console.warn("fills", e); }
  }

  const isOpen = (o) => o.status === "open" || o.status === "partially_filled";

  function onOrder(o) {
    if (!o || !o.id) return;
    if (isOpen(o)) {
      if (st.finalOrders.has(o.id)) return;
      const prev = st.orders.get(o.id);
      if (prev && prev.updatedAt && o.updatedAt && prev.updatedAt > o.updatedAt) return;
      st.orders.set(o.id, o);
    } else {
      st.finalOrders.add(o.id);
      st.orders.delete(o.id);
    }
    renderOrders();
    if (o.pair === st.pair) markDirty("book");
  }

  function onFill(f) {
    if (st.fills.some((x) => x.tradeId === f.tradeId && x.orderId === f.orderId)) return;
    st.fills.unshift(f);
    if (st.fills.length > FILLS_KEPT) st.fills.length = FILLS_KEPT;
    renderFills(f.tradeId);
  }

  function onBalance(b) {
    if (!b || !b.currency) return;
    st.balances.set(b.currency, b);
    renderBalances();
  }

  function renderOrders() {
    const tb = $("open-orders").tBodies[0];
    tb.textContent = "";
    const list = [...st.orders.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
    for (const o of list) {
      const tr = tb.insertRow();
      tr.dataset.orderId = o.id;
      tr.dataset.clientId = o.clientId;
      tr.dataset.testid = "open-order";
      cell(tr, o.pair);
      cell(tr, o.side, o.side);
      cell(tr, o.type);
      cell(tr, pretty(o.price));
      cell(tr, o.amount);
      cell(tr, o.filledAmount);
      cell(tr, o.status);
      cell(tr, (o.createdAt || "").slice(11, 19));
      const td = tr.insertCell();
      const btn = document.createElement("button");
      btn.className = "secondary small cancel";
      btn.textContent = "Cancel";
      btn.dataset.testid = "cancel-" + o.clientId;
      btn.onclick = () => cancelOrder(o.id, btn);
      td.appendChild(btn);
    }
    if (!list.length) {
      const tr = tb.insertRow();
      const td = cell(tr, st.auth ? "no open orders" : "log in to see your orders");
      td.colSpan = 9; td.className = "muted";
    }
  }

  function renderFills(newId) {
    const tb = $("my-fills").tBodies[0];
    tb.textContent = "";
    for (const f of st.fills) {
      const tr = tb.insertRow();
      if (f.tradeId === newId) tr.className = "new";
      cell(tr, f.pair);
      cell(tr, f.side, f.side);
      cell(tr, pretty(f.price));
      cell(tr, f.amount);
      cell(tr, f.fee + " " + (f.feeCurrency || ""));
      cell(tr, f.liquidity);
      cell(tr, (f.timestamp || "").slice(11, 19));
    }
  }

  function renderBalances() {
    const tb = $("balances").tBodies[0];
    tb.textContent = "";
    const list = [...st.balances.values()].sort((a, b) => (a.currency < b.currency ? -1 : 1));
    for (const b of list) {
      const tr = tb.insertRow();
      tr.id = "balance-" + b.currency;
      tr.dataset.testid = "balance-" + b.currency;
      cell(tr, b.currency);
      cell(tr, pretty(b.available));
      cell(tr, pretty(b.held));
    }
    if (!list.length) {
      const td = cell(tb.insertRow(), st.auth ? "-" : "log in to see balances");
      td.colSpan = 3; td.className = "muted";
    }
  }

  async function cancelOrder(id, btn) {
    if (btn) btn.disabled = true;
    try {
      const o = await api("DELETE", "/v1/orders/" + encodeURIComponent(id));
      onOrder(o);
      setStatus("order-status", "cancelled " + o.clientId, "ok");
    } catch (e) {
      if (e.body && e.body.code === "ORDER_NOT_OPEN") { st.finalOrders.add(id); st.orders.delete(id); renderOrders(); }
      setStatus("order-status", "cancel: " + e.message, "err");
      if (btn) btn.disabled = false;
    }
  }

  async function cancelAll() {
    if (!st.auth) return;
    try {
      const r = await api("DELETE", "/v1/orders?pair=" + st.pair);
      for (const id of r.cancelled || []) { st.finalOrders.add(id); st.orders.delete(id); }
      renderOrders();
      markDirty("book");
      setStatus("order-status", "cancelled " + (r.cancelled || []).length + " on " + st.pair, "ok");
    } catch (e) { setStatus("order-status", "cancel all: " + e.message, "err"); }
  }

  function randomId(n) {
    const a = new Uint8Array(n);
    crypto.getRandomValues(a);
    return [...a].map((x) => "abcdefghijklmnopqrstuvwxyz0123456789"[x % 36]).join("");
  }

  // ---------------------------------------------------------------- order ticket

  function syncTicket() {
    const side = $("order-side").value, type = $("order-type").value;
    const btn = $("order-submit");
    btn.className = side;
    btn.textContent = (side === "buy" ? "Buy " : "Sell ") + (st.pair ? st.pairBy[st.pair].base : "");
    $("order-ticket").classList.toggle("market", type === "market");
    $("order-price").disabled = type === "market";
    updateTotal();
  }

  function updateTotal() {
    const p = st.pairBy[st.pair];
    const el = $("order-total");
    el.textContent = "";
    if (!p || $("order-type").value !== "limit") return;
    try {
      const pr = toUnits($("order-price").value, p.priceDecimals);
      const am = toUnits($("order-amount").value, p.amountDecimals);
      el.textContent = "\u2248 " + pretty(fromUnits(pr * am, p.priceDecimals + p.amountDecimals)) + " " + p.quote;
    } catch (_) { /* incomplete input */ }
  }

  async function submitOrder(ev) {
    ev.preventDefault();
    if (!st.auth) { setStatus("order-status", "log in first", "err"); return; }
    const side = $("order-side").value, type = $("order-type").value;
    const clientId = "web-" + Date.now().toString(36) + "-" + randomId(6);
    const body = { pair: st.pair, side, type, amount: $("order-amount").value.trim(), clientId };
    if (type === "limit") { body.price = $("order-price").value.trim(); body.timeInForce = "GTC"; }
    const btn = $("order-submit");
    btn.disabled = true;
    setStatus("order-status", "sending " + clientId + "\u2026");
    try {
      const o = await api("POST", "/v1/orders", body);
      onOrder(o);
      let msg = o.status + " \u00b7 " + o.clientId;
      if (o.filledAmount && o.filledAmount !== "0" && !/^0\.?0*$/.test(o.filledAmount)) msg += " \u00b7 filled " + o.filledAmount + (o.averagePrice ? " @ " + o.averagePrice : "");
      setStatus("order-status", msg, o.status === "rejected" || o.status === "expired" ? "err" : "ok");
      $("order-status").dataset.orderId = o.id;
      $("order-status").dataset.clientId = o.clientId;
    } catch (e) {
      setStatus("order-status", e.message, "err");
    } finally {
      btn.disabled = false;
    }
  }

  function setStatus(id, text, cls) {
    const el = $(id);
    el.textContent = text;
    el.className = "status" + (cls ? " " + cls : "");
  }

  // ---------------------------------------------------------------- start

  async function start() {
    $("ws-url").textContent = wsUrl();
    renderOrders(); renderBalances();
    try {
      const [pairs, currencies, tickers] = await Promise.all([
        api("GET", "/v1/pairs", undefined, { auth: false }),
        api("GET", "/v1/currencies", undefined, { auth: false }),
        api("GET", "/v1/tickers", undefined, { auth: false }).catch(() => []),
      ]);
      st.pairs = pairs;
      pairs.forEach((p) => (st.pairBy[p.pair] = p));
      currencies.forEach((c) => (st.currencies[c.currency] = c));
      (tickers || []).forEach((t) => (st.tickers[t.pair] = t));
    } catch (e) {
      $("pair-name").textContent = "cannot reach the API: " + e.message;
      setTimeout(start, 3000);
      return;
    }
    if (!st.pairs.length) { $("pair-name").textContent = "no pairs"; return; }
    renderTickerStrip();
    st.pairs.forEach((p) => st.subs.add("ticker:" + p.pair));
    const want = decodeURIComponent(location.hash.slice(1));
    await selectPair(st.pairBy[want] ? want : st.pairs[0].pair);
    connect();

    $("order-side").onchange = syncTicket;
    $("order-type").onchange = syncTicket;
    $("order-price").oninput = updateTotal;
    $("order-amount").oninput = updateTotal;
    $("order-ticket").onsubmit = submitOrder;
    $("login-form").onsubmit = (ev) => { ev.preventDefault(); login($("login-client-id").value.trim(), $("login-client-secret").value.trim()); };
    $("register-demo").onclick = registerDemo;
    $("logout").onclick = logout;
    $("cancel-all").onclick = cancelAll;
    document.querySelectorAll("#intervals button").forEach((b) => (b.onclick = () => setInterval_(b.dataset.iv)));
    window.addEventListener("hashchange", () => { const p = decodeURIComponent(location.hash.slice(1)); if (st.pairBy[p]) selectPair(p); });
    window.addEventListener("resize", () => { markDirty("candles"); markDirty("depth"); });
    syncTicket();

    try {
      const saved = JSON.parse(sessionStorage.getItem("bourse.creds") || "null");
      if (saved && saved.clientId) {
        $("login-client-id").value = saved.clientId;
        $("login-client-secret").value = saved.clientSecret;
        login(saved.clientId, saved.clientSecret);
      }
    } catch (_) {}
  }

  // Exposed for the browser test and for poking at it from the console.
  window.bourse = { state: st, crc32, bookChecksum: () => st.book && bookChecksum(st.book, st.book.pair), onBook, toUnits, fromUnits };
  start();
})();
