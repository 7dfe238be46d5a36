// The pool-over-time chart: inline SVG built node by node (no library, no inline style),
// so it renders under the dashboard's CSP and stays crisp at any width.

const SVG = "http://www.w3.org/2000/svg";
const [W, H, LEFT, RIGHT, TOP, BOTTOM] = [640, 220, 40, 12, 10, 26];
const MIN_SPAN_SEC = 15 * 60; // a young history still gets a readable time axis

function node(tag, attrs, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function hhmm(sec) {
  const d = new Date(sec * 1000);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

// Counts hold until the next sample, so each line is drawn as steps, not slopes.
function steps(points, x, y, status) {
  const xy = [];
  points.forEach((p, i) => {
    const v = y(p.counts[status] || 0);
    if (i > 0) xy.push(`${x(p.at).toFixed(1)},${xy[xy.length - 1].split(",")[1]}`);
    xy.push(`${x(p.at).toFixed(1)},${v.toFixed(1)}`);
  });
  return xy.join(" ");
}

/**
 * Draw `points` ([{at: epoch sec, counts: {status: n}}], oldest first, at least one)
 * into `container`, one line per status; returns the <svg>.
 */
export function drawChart(container, points, statuses, title) {
  const t1 = points[points.length - 1].at;
  const t0 = Math.min(points[0].at, t1 - MIN_SPAN_SEC);
  const peak = Math.max(1, ...points.flatMap((p) => statuses.map((s) => p.counts[s] || 0)));
  const top = Math.ceil(peak / 4) * 4;
  const x = (t) => LEFT + ((t - t0) / (t1 - t0)) * (W - LEFT - RIGHT);
  const y = (n) => TOP + (1 - n / top) * (H - TOP - BOTTOM);

  const chart = node("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg",
    "aria-labelledby": "chart-title"});
  chart.append(node("title", {id: "chart-title"}, title));
  for (let i = 0; i <= 4; i += 1) {
    const v = (top / 4) * i;
    chart.append(node("line", {x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v), class: "grid"}),
      node("text", {x: LEFT - 6, y: y(v) + 4, class: "axis end"}, String(v)));
  }
  const ticks = [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]];
  for (const [t, anchor] of ticks) {
    chart.append(node("text", {x: x(t), y: H - 6, class: `axis ${anchor}`}, hhmm(t)));
  }
  for (const status of statuses) {
    if (points.length > 1) {
      chart.append(node("polyline", {points: steps(points, x, y, status),
        class: `line s-${status}`}));
    }
    const last = points[points.length - 1];
    chart.append(node("circle", {cx: x(last.at), cy: y(last.counts[status] || 0), r: 3.5,
      class: `dot s-${status}`}));
  }
  container.replaceChildren(chart);
  return chart;
}
