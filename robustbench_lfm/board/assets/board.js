// lfm-bench board: sort a leaderboard by a column, filter rows by model, regularizer, backbone and
// attack. Plain DOM, no library, nothing fetched: the page works from file://.
"use strict";

function cellKey(row, index, numeric) {
  const cell = row.cells[index];
  if (!numeric) return cell.textContent.trim().toLowerCase();
  const value = cell.dataset.value;
  return value === undefined || value === "" ? null : parseFloat(value);
}

function sortBy(th) {
  const numeric = th.dataset.type === "num";
  const first = numeric ? "descending" : "ascending";  // numbers: best first; text: A to Z
  const current = th.getAttribute("aria-sort");
  const dir = current === first ? (first === "ascending" ? "descending" : "ascending") : first;
  for (const other of th.parentNode.children) other.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", dir);
  const index = Array.from(th.parentNode.children).indexOf(th);
  const body = th.closest("table").tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellKey(a, index, numeric), y = cellKey(b, index, numeric);
    if (x === null && y === null) return 0;
    if (x === null) return 1;  // a missing value sorts last either way
    if (y === null) return -1;
    const order = x < y ? -1 : x > y ? 1 : 0;
    return dir === "ascending" ? order : -order;
  });
  for (const row of rows) body.appendChild(row);
}

function applyFilters() {
  const value = (id) => document.getElementById(id).value;
  const text = value("filter-model").trim().toLowerCase();
  const regularizer = value("filter-regularizer"), backbone = value("filter-backbone"), attack = value("filter-attack");
  let shown = 0, total = 0;
  for (const section of document.querySelectorAll("section.board")) {
    const hasAttack = !attack || section.dataset.attacks.split(" ").includes(attack);
    let visible = 0;
    for (const row of section.querySelectorAll("table.leaderboard tbody tr")) {
      const keep = hasAttack
        && (!text || row.dataset.model.toLowerCase().includes(text))
        && (!regularizer || row.dataset.regularizer === regularizer)
        && (!backbone || row.dataset.backbone === backbone);
      row.hidden = !keep;
      visible += keep ? 1 : 0;
      total += 1;
    }
    for (const cell of section.querySelectorAll("[data-attack]")) {
      cell.hidden = Boolean(attack) && cell.dataset.attack !== "clean" && cell.dataset.attack !== attack;
    }
    section.hidden = visible === 0;
    const entry = document.querySelector(`tr[data-board="${section.id}"]`);
    if (entry) entry.hidden = section.hidden;
    shown += visible;
  }
  document.getElementById("filter-count").textContent = `${shown} of ${total} rows shown`;
}

document.addEventListener("DOMContentLoaded", () => {
  for (const th of document.querySelectorAll("th.sortable")) {
    th.addEventListener("click", () => sortBy(th));
    th.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(th); }
    });
  }
  const filters = document.querySelectorAll(".filters input, .filters select");
  for (const control of filters) control.addEventListener("input", applyFilters);
  if (filters.length) applyFilters();
});
