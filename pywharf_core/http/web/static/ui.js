// Progressive enhancement only: every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Filter the project list as you type (the form still filters on the server without JS).
  const input = document.querySelector("input[data-filter]");
  const list = input && document.getElementById(input.dataset.filter);
  const status = document.getElementById("filter-status");
  if (input && list) {
    const items = Array.from(list.querySelectorAll("li[data-search]"));
    const total = Number(list.dataset.total || items.length);
    const apply = () => {
      const query = input.value.trim().toLowerCase();
      let shown = 0;
      for (const item of items) {
        const match = !query || item.dataset.search.includes(query);
        item.hidden = !match;
        if (match) shown += 1;
      }
      if (status) {
        status.textContent = query
          ? `${shown} of ${total} projects match “${input.value.trim()}”.`
          : `${total} project${total === 1 ? "" : "s"}.`;
      }
    };
    input.addEventListener("input", apply);
  }
  // Copy buttons for the install commands.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      const label = button.textContent;
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
      } catch (error) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => { button.textContent = label; }, 2000);
    });
  }
});
