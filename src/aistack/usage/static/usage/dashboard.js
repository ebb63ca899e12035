// The usage dashboard's charts, drawn by Chart.js from the JSON the page embeds.
(function () {
  "use strict";

  const source = document.getElementById("usage-chart-data");
  if (!source || typeof Chart === "undefined") {
    return;
  }
  const data = JSON.parse(source.textContent);
  const palette = ["#2f5d9b", "#d17a22", "#3b8f5a", "#a3262a", "#7a4fa0", "#2a8c99",
                   "#b5912f", "#5a6472", "#c4588b", "#6c8f2e"];

  // Drawn at once, so that what is printed or captured is the finished chart.
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.plugins.legend.position = "bottom";

  function draw(id, labels, datasets, yTitle, extra) {
    const canvas = document.getElementById(id);
    if (!canvas) {
      return;
    }
    const y = Object.assign({ beginAtZero: true, title: { display: true, text: yTitle } },
                            (extra && extra.y) || {});
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: labels,
        datasets: datasets.map(function (set, n) {
          return Object.assign({ backgroundColor: palette[n % palette.length] }, set);
        }),
      },
      options: { scales: { x: (extra && extra.x) || {}, y: y } },
    });
  }

  function stacked(id, series, yTitle) {
    const datasets = Object.keys(series).sort().map(function (name) {
      return { label: name, data: series[name] };
    });
    draw(id, data.days, datasets, yTitle, { x: { stacked: true }, y: { stacked: true } });
  }

  stacked("chart-cost-feature", data.costByFeature, "USD");
  stacked("chart-cost-model", data.costByModel, "USD");
  stacked("chart-tokens-feature", data.tokensByFeature, "tokens");
  stacked("chart-tokens-model", data.tokensByModel, "tokens");

  const latencyLabels = data.latency.map(function (row) { return row.label; });
  function column(key) {
    return data.latency.map(function (row) { return row[key]; });
  }
  draw("chart-latency", latencyLabels, [
    { label: "p50", data: column("p50") },
    { label: "p95", data: column("p95") },
    { label: "first token p50", data: column("ttftP50") },
    { label: "first token p95", data: column("ttftP95") },
  ], "ms");

  draw("chart-cache", data.cache.map(function (row) { return row.label; }), [
    { label: "hit ratio", data: data.cache.map(function (row) { return row.ratio; }) },
  ], "%", { y: { max: 100 } });
})();
