/*
 * The committee compliance page's charts (templates/admin/compliance.html), drawn with
 * the vendored Apache ECharts (static/vendor/echarts/echarts.min.js).
 *
 * Data comes from the page's <script type="application/json" id="compliance-chart-data">
 * (rates in percent, null where there is no branch), so the page needs no inline script.
 * Each chart container gets data-rendered="1" once ECharts has finished drawing it, so a
 * browser test can wait for it:
 *   #chart-suborgs  rate per child organisation (bar)
 *   #chart-trend    the last 12 months' rate (line)
 */
(function () {
  "use strict";

  var RED = "#b71c1c";
  var AMBER = "#ef6c00";

  function readData() {
    var source = document.getElementById("compliance-chart-data");
    if (!source) { return null; }
    try { return JSON.parse(source.textContent); } catch (e) { return null; }
  }

  function tooltipLine(name, rate, compliant, branches, label) {
    var value = rate === null ? "—" : rate + "%";
    return name + "<br>" + label + "：" + value + "（" + compliant + " / " + branches + " 个支部）";
  }

  function draw(id, option) {
    var el = document.getElementById(id);
    if (!el) { return; }
    if (!el.clientHeight) { el.style.height = "320px"; }
    var chart = window.echarts.init(el, null, { renderer: "canvas" });
    chart.on("finished", function () { el.setAttribute("data-rendered", "1"); });
    chart.setOption(option);
    window.addEventListener("resize", function () { chart.resize(); });
  }

  function percentAxis() {
    return { type: "value", min: 0, max: 100, axisLabel: { formatter: "{value}%" } };
  }

  function suborgs(data) {
    var rows = data.suborgs || [];
    var label = data.in_progress ? "已开展比例" : "达标率";
    var many = rows.length > 12;
    return {
      animation: false,
      grid: { left: 48, right: 16, top: 24, bottom: many ? 96 : 64 },
      tooltip: {
        trigger: "axis",
        formatter: function (items) {
          var row = rows[items[0].dataIndex];
          return tooltipLine(row.name, row.rate, row.compliant, row.branches, label);
        }
      },
      xAxis: { type: "category", data: rows.map(function (r) { return r.name; }),
               axisLabel: { interval: 0, rotate: rows.length > 4 ? 30 : 0 } },
      yAxis: percentAxis(),
      dataZoom: many ? [{ type: "slider", start: 0, end: Math.round(1200 / rows.length), bottom: 8 }] : [],
      series: [{ type: "bar", name: label, barMaxWidth: 40,
                 itemStyle: { color: data.in_progress ? AMBER : RED },
                 label: { show: !many, position: "top", formatter: function (p) {
                   return p.value === null ? "" : p.value + "%"; } },
                 data: rows.map(function (r) { return r.rate; }) }]
    };
  }

  function trend(data) {
    var points = data.trend || [];
    return {
      animation: false,
      grid: { left: 48, right: 16, top: 24, bottom: 40 },
      tooltip: {
        trigger: "axis",
        formatter: function (items) {
          var p = points[items[0].dataIndex];
          return tooltipLine(p.month + (p.in_progress ? "（进行中）" : ""), p.rate, p.compliant,
                             p.branches, p.in_progress ? "已开展比例" : "达标率");
        }
      },
      xAxis: { type: "category", data: points.map(function (p) { return p.month; }) },
      yAxis: percentAxis(),
      series: [{ type: "line", name: "达标率", connectNulls: false, symbolSize: 7,
                 itemStyle: { color: RED }, lineStyle: { color: RED },
                 data: points.map(function (p) {
                   // The running month is drawn apart: it is not a verdict yet.
                   return p.in_progress ? { value: p.rate, itemStyle: { color: AMBER } } : p.rate;
                 }) }]
    };
  }

  function start() {
    var data = readData();
    if (!data || !window.echarts) { return; }
    draw("chart-suborgs", suborgs(data));
    draw("chart-trend", trend(data));
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
