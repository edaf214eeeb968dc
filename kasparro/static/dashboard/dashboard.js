/*
 * The dashboard's script: draws each charted asset's price per source, and refreshes the page
 * from the JSON API (/assets, /assets/<id>, /assets/<id>/history, /runs, /stats, /health).
 *
 * The server renders the same tables first (kasparro/routes/dashboard.py, with the template
 * dashboard.html); numbers and times are written here by the same rules as there, so that a
 * refresh changes only what the data changed. Every element is built with textContent: names
 * and errors come from upstream sources and are never read as HTML.
 */
"use strict";

(() => {
  const page = document.getElementById("dashboard");
  const limits = {
    topAssets: Number(page.dataset.topAssets),
    chartedAssets: Number(page.dataset.chartedAssets),
    runLogLength: Number(page.dataset.runLogLength),
    refreshSeconds: Number(page.dataset.refreshSeconds),
  };
  // A source keeps one colour on every chart: the one at its place among the server's sources.
  const sourceOrder = page.dataset.sources.split(" ").filter(Boolean);
  const PALETTE = ["#2563eb", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2"];
  // How far back a chart reaches from the asset's newest price, for each bucket size: at most
  // 365 buckets (the history answers up to 500 a page).
  const WINDOW_SECONDS = { "5m": 24 * 3600, "1h": 7 * 24 * 3600, "1d": 365 * 24 * 3600 };
  const BUCKET_SECONDS = { "5m": 300, "1h": 3600, "1d": 86400 };
  const MAX_HISTORY_PAGES = 20;
  const CHART_HEIGHT = 240;
  const MISSING = "—";
  const COMPACT_UNITS = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]];

  const grid = document.getElementById("chart-grid");
  const assetChoice = document.getElementById("chart-asset");
  const intervalChoice = document.getElementById("chart-interval");
  const refreshStatus = document.getElementById("refresh-status");
  const charts = new Map(); // asset id -> {card, title, summary, body, plot, sources, ...}
  const resizer = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const chart = charts.get(entry.target.dataset.asset);
      if (chart && chart.plot) chart.plot.setSize(chartSize(chart.body));
    }
  });
  let latestAssets = [];
  let timer = null;


  // Numbers, as kasparro/routes/dashboard.py writes them.
  const cents = new Intl.NumberFormat("en-US", {
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
  });
  const unsignedCents = new Intl.NumberFormat("en-US", {
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
    signDisplay: "negative", // no "-0.00"
  });
  const signedCents = new Intl.NumberFormat("en-US", {
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
    signDisplay: "exceptZero",
  });
  const fourDigits = new Intl.NumberFormat("en-US", {
    minimumSignificantDigits: 4,
    maximumSignificantDigits: 4,
    useGrouping: false,
  });
  const whole = new Intl.NumberFormat("en-US");
  const axisNumber = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 6 });

  function usd(value) {
    if (value === null || value === undefined) return MISSING;
    const number = Number(value);
    if (number === 0 || Math.abs(number) >= 1) return `$${cents.format(number)}`;
    return `$${fourDigits.format(number)}`;
  }

  function usdCompact(value) {
    if (value === null || value === undefined) return MISSING;
    const number = Number(value);
    for (const [size, unit] of COMPACT_UNITS) {
      if (Math.abs(number) >= size) return `$${cents.format(number / size)}${unit}`;
    }
    return usd(value);
  }

  function percent(value, signed = false) {
    if (value === null || value === undefined) return MISSING;
    return `${(signed ? signedCents : unsignedCents).format(value)}%`;
  }

  function count(value) {
    return value === null || value === undefined ? MISSING : whole.format(value);
  }

  function duration(milliseconds) {
    return milliseconds === null || milliseconds === undefined
      ? MISSING
      : `${whole.format(milliseconds)} ms`;
  }

  function utc(iso) {
    if (!iso) return MISSING;
    return `${new Date(iso).toISOString().slice(0, 19).replace("T", " ")} UTC`;
  }

  // Read by the browser test: the drawn charts, how many refreshes (and failures among them) and
  // drawings of the charts have ended, and the formatting rules, to hold them to the server's.
  window.kasparroDashboard = {
    charts,
    refreshes: 0,
    failures: 0,
    drawings: 0,
    refresh,
    format: { usd, usdCompact, percent, count, duration, utc },
  };

  // Elements.
  function el(tag, attributes = {}, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value !== null && value !== undefined && value !== false) {
        element.setAttribute(name, value);
      }
    }
    element.append(...children);
    return element;
  }

  function statusBadge(status, text = status) {
    return el("span", { class: `status status-${(status || "none").toLowerCase()}` }, text);
  }

  function emptyRow(columns, text) {
    return el("tr", { class: "empty" }, el("td", { colspan: columns }, text));
  }

  async function getJSON(path, accepted = [200]) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    if (!accepted.includes(response.status)) {
      throw new Error(`${path} answered ${response.status}`);
    }
    return response.json();
  }

  // The tables and cards.
  function assetRow(asset, rank) {
    const change = asset.change_24h_percent;
    const trend = change > 0 ? " up" : change < 0 ? " down" : "";
    const href = `/assets/${encodeURIComponent(asset.id)}`;
    return el(
      "tr",
      { "data-asset": asset.id },
      el("td", { "data-label": "#" }, String(rank)),
      el(
        "td",
        { "data-label": "Asset" },
        el(
          "span",
          {},
          el("a", { href }, asset.name),
          " ",
          el("span", { class: "symbol" }, asset.symbol.toUpperCase()),
        ),
      ),
      el(
        "td",
        { "data-label": "Price", class: "num", title: asset.price_usd },
        usd(asset.price_usd),
      ),
      el("td", { "data-label": "24h", class: `num${trend}` }, percent(change, true)),
      el("td", { "data-label": "Spread", class: "num" }, percent(asset.spread_percent)),
      el("td", { "data-label": "Market cap", class: "num" }, usdCompact(asset.market_cap_usd)),
      el("td", { "data-label": "Sources" }, asset.sources.join(", ")),
      el("td", { "data-label": "Last report" }, utc(asset.last_reported_at)),
    );
  }

  function renderAssets(assets) {
    const rows = assets.map((asset, index) => assetRow(asset, index + 1));
    document
      .getElementById("asset-rows")
      .replaceChildren(...(rows.length ? rows : [emptyRow(8, "No asset has been observed yet.")]));
    // The choice stands while the asset is in the table; otherwise the top few are charted.
    const wanted = assetChoice.value || chosenInAddress();
    const chosen = assets.some((asset) => asset.id === wanted) ? wanted : "";
    const options = assets.map((asset) => el("option", { value: asset.id }, asset.name));
    const top = el("option", { value: "" }, `Top ${limits.chartedAssets}`);
    assetChoice.replaceChildren(top, ...options);
    assetChoice.value = chosen;
  }

  function runRow(run) {
    const cell = (text) => el("td", { class: "num" }, text);
    return el(
      "tr",
      { "data-run": run.id },
      el("td", {}, el("a", { href: `/runs/${run.id}` }, String(run.id))),
      el("td", {}, run.source),
      el("td", {}, statusBadge(run.status)),
      el("td", {}, run.trigger),
      el("td", {}, utc(run.started_at)),
      cell(duration(run.duration_ms)),
      cell(count(run.rows_read)),
      cell(count(run.inserted)),
      cell(count(run.updated)),
      cell(count(run.unchanged)),
      cell(count(run.rejected)),
      el("td", { class: "error-cell", title: run.error || "" }, run.error || ""),
    );
  }

  function renderRuns(runs) {
    const rows = runs.map(runRow);
    document
      .getElementById("run-rows")
      .replaceChildren(...(rows.length ? rows : [emptyRow(12, "No run yet.")]));
  }

  function sourceCard(name, source) {
    const run = source.last_run;
    const facts = [
      ["Last run", utc(run && (run.finished_at || run.started_at))],
      ["Duration", duration(source.last_duration_ms)],
      ["Last success", utc(source.last_success_at)],
      ["Last failure", utc(source.last_failure_at)],
      ["Records", count(source.total_records)],
      ["Rejected", count(source.rejected_records)],
      ["Unresolved", count(source.unresolved_records)],
    ];
    const card = el(
      "article",
      { class: "source-card", "data-source": name },
      el("h3", {}, name, " ", statusBadge(source.last_status, source.last_status || "never run")),
      el("dl", {}, ...facts.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)])),
    );
    if (run && run.error) card.append(el("p", { class: "error" }, run.error));
    return card;
  }

  function renderSources(sources) {
    const names = [
      ...sourceOrder.filter((name) => name in sources),
      ...Object.keys(sources).filter((name) => !sourceOrder.includes(name)),
    ];
    document
      .getElementById("source-cards")
      .replaceChildren(...names.map((name) => sourceCard(name, sources[name])));
  }

  function renderHealth(health) {
    const broker =
      health.broker_connected === null
        ? "tasks run in-process"
        : `broker ${health.broker_connected ? "connected" : "unreachable"}`;
    const database = `database ${health.database_connected ? "connected" : "unreachable"}`;
    const line = document.getElementById("service-status");
    line.replaceChildren(statusBadge(health.status), ` ${database}, ${broker}`);
    line.hidden = false;
  }

  // The charts.
  function chosenInAddress() {
    const match = /^#chart=(.+)$/.exec(window.location.hash);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function sourcePlace(source) {
    const place = sourceOrder.indexOf(source);
    return place < 0 ? sourceOrder.length : place;
  }

  function sourceColour(source) {
    return PALETTE[sourcePlace(source) % PALETTE.length];
  }

  function chartSize(body) {
    return { width: Math.max(body.clientWidth, 200), height: CHART_HEIGHT };
  }

  async function priceHistory(assetId, source, interval, since) {
    const buckets = [];
    let cursor = null;
    for (let pages = 0; pages < MAX_HISTORY_PAGES; pages += 1) {
      // The window's buckets fit one page: the cursor is followed only should they not.
      const limit = String(WINDOW_SECONDS[interval] / BUCKET_SECONDS[interval]);
      const query = new URLSearchParams({ metric: "price_usd", source, interval, since, limit });
      if (cursor) query.set("cursor", cursor);
      const path = `/assets/${encodeURIComponent(assetId)}/history?${query}`;
      const answer = await getJSON(path);
      buckets.push(...answer.buckets);
      cursor = answer.next_cursor;
      if (!cursor) break;
    }
    return buckets;
  }

  // uPlot's data: the bucket starts of every source, and each source's close at each (or null).
  function aligned(histories) {
    const seconds = (bucket) => Date.parse(bucket.start) / 1000;
    const starts = [...new Set(histories.flat().map(seconds))].sort((a, b) => a - b);
    const column = new Map(starts.map((start, index) => [start, index]));
    const closes = histories.map((buckets) => {
      const values = new Array(starts.length).fill(null);
      for (const bucket of buckets) values[column.get(seconds(bucket))] = Number(bucket.close);
      return values;
    });
    return [starts, ...closes];
  }

  // From half a bucket before the first bucket to half a bucket after the last: uPlot's own
  // range for a single bucket would span a thousand days.
  function timeRange(interval) {
    const half = BUCKET_SECONDS[interval] / 2;
    return (plot, min, max) => {
      const starts = plot.data[0];
      return starts.length ? [starts[0] - half, starts[starts.length - 1] + half] : [min, max];
    };
  }

  // One price alone, or several equal, gets a small range around it (not 0 to twice it).
  function priceRange(plot, min, max) {
    if (min !== max) return uPlot.rangeNum(min, max, 0.1, true);
    const room = Math.abs(min) * 0.005 || 1;
    return [min - room, max + room];
  }

  function plotOptions(sources, interval, body) {
    const style = getComputedStyle(document.documentElement);
    const text = style.getPropertyValue("--muted").trim();
    const gridLine = { stroke: style.getPropertyValue("--grid").trim(), width: 1 };
    const background = style.getPropertyValue("--panel").trim();
    return {
      ...chartSize(body),
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
      cursor: { points: { size: 7 } },
      scales: { x: { time: true, range: timeRange(interval) }, y: { range: priceRange } },
      series: [
        { label: "Bucket (UTC)", value: "{YYYY}-{MM}-{DD} {HH}:{mm}" },
        ...sources.map((source, index) => ({
          label: source,
          stroke: sourceColour(source),
          width: 2,
          spanGaps: true,
          // Each source's points are larger than the next one's: where sources agree, the
          // points drawn later leave a ring of those below them.
          points: { show: true, size: 6 + 4 * (sources.length - 1 - index), fill: background },
          value: (plot, value) => usd(value),
        })),
      ],
      axes: [
        { stroke: text, grid: gridLine, ticks: gridLine, space: 70 }, // px between time ticks
        {
          stroke: text,
          grid: gridLine,
          ticks: gridLine,
          values: (plot, ticks) => ticks.map((tick) => axisNumber.format(tick)),
          size: (plot, values) =>
            values ? Math.max(...values.map((value) => value.length)) * 7 + 20 : 50,
        },
      ],
    };
  }

  function chartCard(assetId) {
    const title = el("span", {}, assetId);
    const summary = el("span", { class: "chart-summary" });
    const body = el("div", { class: "chart-body", "data-asset": assetId });
    const card = el(
      "article",
      { class: "chart-card", id: `chart-${assetId}`, "data-asset": assetId },
      el("h3", {}, title, summary),
      body,
    );
    resizer.observe(body);
    return { card, title, summary, body, plot: null, sources: [] };
  }

  function forget(assetId) {
    const chart = charts.get(assetId);
    resizer.unobserve(chart.body);
    if (chart.plot) chart.plot.destroy();
    chart.card.remove();
    charts.delete(assetId);
  }

  async function drawChart(assetId, interval) {
    const detail = await getJSON(`/assets/${encodeURIComponent(assetId)}`);
    const prices = detail.latest.filter((value) => value.metric === "price_usd");
    const sources = prices
      .map((value) => value.source)
      .sort((a, b) => sourcePlace(a) - sourcePlace(b) || a.localeCompare(b));
    const newest = Math.max(0, ...prices.map((value) => Date.parse(value.timestamp)));
    const since = new Date(Math.max(0, newest - WINDOW_SECONDS[interval] * 1000)).toISOString();
    const histories = await Promise.all(
      sources.map((source) => priceHistory(assetId, source, interval, since)),
    );
    const chart = charts.get(assetId) || chartCard(assetId);
    charts.set(assetId, chart);
    chart.title.textContent = `${detail.name} (${detail.symbol.toUpperCase()})`;
    const consensus = detail.consensus.find((entry) => entry.metric === "price_usd");
    chart.summary.textContent = consensus
      ? `median ${usd(consensus.median)} · spread ${percent(consensus.spread_percent)} · ` +
        `${consensus.sources} source${consensus.sources === 1 ? "" : "s"}`
      : "no price observed yet";
    const data = aligned(histories);
    const sameSeries =
      chart.plot && chart.interval === interval && chart.sources.join() === sources.join();
    if (sameSeries) {
      chart.plot.setData(data);
    } else {
      if (chart.plot) chart.plot.destroy();
      chart.plot = null;
      chart.body.replaceChildren();
      if (sources.length) {
        chart.plot = new uPlot(plotOptions(sources, interval, chart.body), data, chart.body);
      }
    }
    Object.assign(chart, { sources, interval, since });
    return chart;
  }

  async function drawCharts() {
    const chosen = assetChoice.value;
    const ids = chosen ? [chosen] : latestAssets.slice(0, limits.chartedAssets).map((a) => a.id);
    for (const assetId of [...charts.keys()]) {
      if (!ids.includes(assetId)) forget(assetId);
    }
    const interval = intervalChoice.value;
    const drawn = await Promise.all(ids.map((assetId) => drawChart(assetId, interval)));
    grid.replaceChildren(...drawn.map((chart) => chart.card));
    if (!drawn.length) grid.append(el("p", { class: "note" }, "No asset to chart yet."));
    window.kasparroDashboard.drawings += 1;
  }

  // Refreshing.
  async function refresh() {
    clearTimeout(timer);
    try {
      const [assets, runs, stats, health] = await Promise.all([
        getJSON(`/assets?sort=market_cap&page_size=${limits.topAssets}`),
        getJSON(`/runs?limit=${limits.runLogLength}`),
        getJSON("/stats"),
        getJSON("/health", [200, 503]), // 503 still tells what is down
      ]);
      latestAssets = assets.assets;
      renderAssets(latestAssets);
      renderRuns(runs.runs);
      renderSources(stats.sources);
      renderHealth(health);
      await drawCharts();
      refreshStatus.textContent = `Updated ${utc(new Date().toISOString())}.`;
      refreshStatus.classList.remove("failed");
    } catch (error) {
      window.kasparroDashboard.failures += 1;
      refreshStatus.textContent = `Could not refresh: ${error.message}.`;
      refreshStatus.classList.add("failed");
    } finally {
      window.kasparroDashboard.refreshes += 1;
      timer = setTimeout(refreshWhenVisible, limits.refreshSeconds * 1000);
    }
  }

  function refreshWhenVisible() {
    if (document.hidden) {
      document.addEventListener("visibilitychange", refreshWhenVisible, { once: true });
    } else {
      refresh();
    }
  }

  function redrawCharts() {
    drawCharts().catch((error) => {
      refreshStatus.textContent = `Could not draw the charts: ${error.message}.`;
      refreshStatus.classList.add("failed");
    });
  }

  assetChoice.addEventListener("change", () => {
    const { pathname, search } = window.location;
    const hash = assetChoice.value ? `#chart=${encodeURIComponent(assetChoice.value)}` : "";
    window.history.replaceState(null, "", `${pathname}${search}${hash}`);
    redrawCharts();
  });
  intervalChoice.addEventListener("change", redrawCharts);
  // The charts take their colours from the page's when drawn: a change of theme draws them anew.
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    for (const assetId of [...charts.keys()]) forget(assetId);
    redrawCharts();
  });
  document.getElementById("chart-controls").hidden = false;
  refresh();
})();
