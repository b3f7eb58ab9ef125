// ownloop dashboard: show every <time datetime> in the viewer's time zone (UTC stays on hover).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const el of document.querySelectorAll("time[datetime]")) {
    const t = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(t.getTime())) el.textContent = t.toLocaleString();
  }
});
