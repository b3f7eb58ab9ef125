// ownloop dashboard: times in the viewer's time zone (UTC stays on hover) and sortable tables.
// No inline handlers anywhere (the Content-Security-Policy forbids them): listeners are set here.
"use strict";

function localiseTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const t = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(t.getTime())) el.textContent = t.toLocaleString();
  }
}

function cellKey(row, index) {
  const cell = row.cells[index];
  if (!cell) return { num: NaN, text: "" };
  const raw = cell.getAttribute("data-sort");
  const num = raw === null || raw.trim() === "" ? NaN : Number(raw);
  return { num, text: cell.textContent.trim(), hasSort: raw !== null };
}

function compareRows(index, numeric) {
  return (a, b) => {
    const x = cellKey(a, index);
    const y = cellKey(b, index);
    if (numeric) {
      // rows without a number go last whichever way the column is sorted
      const xn = Number.isNaN(x.num);
      const yn = Number.isNaN(y.num);
      if (xn || yn) return xn === yn ? 0 : xn ? 1 : -1;
      return x.num - y.num;
    }
    return x.text.localeCompare(y.text, undefined, { numeric: true, sensitivity: "base" });
  };
}

function makeSortable(table) {
  const head = table.tHead ? table.tHead.rows[0] : table.rows[0];
  if (!head) return;
  Array.from(head.cells).forEach((th, index) => {
    th.classList.add("sort");
    th.setAttribute("tabindex", "0");
    th.setAttribute("aria-sort", "none");
    const sort = () => {
      const body = table.tBodies[0];
      if (!body) return;
      const rows = Array.from(body.rows);
      const numeric = rows.some((r) => cellKey(r, index).hasSort);
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      const cmp = compareRows(index, numeric);
      rows.sort((a, b) => {
        const c = cmp(a, b);
        const aMissing = numeric && Number.isNaN(cellKey(a, index).num);
        const bMissing = numeric && Number.isNaN(cellKey(b, index).num);
        return aMissing || bMissing ? c : ascending ? c : -c;
      });
      for (const other of head.cells) other.setAttribute("aria-sort", "none");
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      for (const r of rows) body.appendChild(r);
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        sort();
      }
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localiseTimes(document);
  for (const table of document.querySelectorAll("table.sortable")) makeSortable(table);
});
